use super::*;

fn secure() -> AuthConfig {
    AuthConfig {
        insecure: false,
        admin_token: Some("boot".into()),
        join_token: Some("join".into()),
        worker_certificates: false,
        rate_limit: 0.0,
        rate_burst: 0.0,
        max_inflight: 0,
    }
}

fn request(token: Option<&str>) -> Request<()> {
    let mut r = Request::new(());
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii"),
        );
    }
    r
}

fn record(name: &str, role: Role, secret: &str, expires: Option<i64>) -> TokenRecord {
    TokenRecord {
        v: augur_core::auth::TOKEN_RECORD_VERSION,
        name: name.into(),
        role,
        hash: hash_secret(secret),
        created_at_ms: 0,
        expires_at_ms: expires,
        created_by: BOOTSTRAP_NAME.into(),
    }
}

#[test]
fn start_up_needs_authentication_or_insecure() {
    assert!(secure().check().is_ok());
    let open = AuthConfig::default();
    let err = open.check().expect_err("open config refused");
    assert!(err.contains("--admin-token-file") && err.contains("--join-token-file"));
    let mut api_only = secure();
    api_only.join_token = None;
    assert!(api_only
        .check()
        .expect_err("workers open")
        .contains("worker"));
    api_only.worker_certificates = true;
    assert!(api_only.check().is_ok());
    let insecure = AuthConfig {
        insecure: true,
        ..Default::default()
    };
    assert!(insecure.check().is_ok());
}

fn refusals(family: &RefusalCounter, action: &str, code: &str) -> u64 {
    family
        .get_or_create(&RefusalLabel {
            action: action.into(),
            code: code.into(),
        })
        .get()
}

#[test]
fn refusals_are_counted_by_action_and_code() {
    let family = RefusalCounter::default();
    let auth = Auth::new(secure()).with_refusal_metric(family.clone());
    auth.replace_tokens(vec![record("viewer1", Role::Viewer, "v", None)]);
    assert!(auth.admit(&request(None), Action::Read).is_err());
    assert!(auth.admit(&request(Some("v")), Action::Submit).is_err());
    assert!(auth.admit(&request(Some("v")), Action::Submit).is_err());
    assert!(auth.admit(&request(Some("v")), Action::Read).is_ok());
    assert!(auth.admit_worker(&request(None), "w1").is_err());
    let read = Action::Read.as_str();
    let submit = Action::Submit.as_str();
    assert_eq!(refusals(&family, read, "unauthenticated"), 1);
    assert_eq!(refusals(&family, submit, "permission_denied"), 2);
    assert_eq!(refusals(&family, read, "permission_denied"), 0);
    assert_eq!(refusals(&family, "worker_attach", "unauthenticated"), 1);
}

#[test]
fn callers_are_found_by_token_and_checked_by_role() {
    let auth = Auth::new(secure());
    let no_token = auth
        .admit(&request(None), Action::Read)
        .expect_err("refused");
    assert_eq!(no_token.code(), tonic::Code::Unauthenticated);
    assert!(no_token.message().contains("Bearer"));
    // Before the mirror is loaded an unknown token is "retry", not "denied".
    let early = auth
        .admit(&request(Some("v")), Action::Read)
        .expect_err("refused");
    assert_eq!(early.code(), tonic::Code::Unavailable);
    auth.replace_tokens(vec![
        record("viewer1", Role::Viewer, "v", None),
        record("sub1", Role::Submitter, "s", None),
        record("old", Role::Admin, "o", Some(1)),
    ]);
    let admin = auth
        .admit(&request(Some("boot")), Action::ManageTokens)
        .expect("admin");
    assert_eq!(admin.caller.name, BOOTSTRAP_NAME);
    assert!(auth.admit(&request(Some("v")), Action::Read).is_ok());
    let denied = auth
        .admit(&request(Some("v")), Action::Submit)
        .expect_err("denied");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(denied.message().contains("viewer1") && denied.message().contains("submitter"));
    assert!(auth.admit(&request(Some("s")), Action::Submit).is_ok());
    let expired = auth
        .admit(&request(Some("o")), Action::Read)
        .expect_err("expired");
    assert_eq!(expired.code(), tonic::Code::Unauthenticated);
    assert!(expired.message().contains("expired"));
    let unknown = auth
        .admit(&request(Some("nope")), Action::Read)
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
    // Revocation through the watch path.
    auth.apply(vec![TokenChange::Removed("sub1".into())]);
    assert!(auth.admit(&request(Some("s")), Action::Read).is_err());
}

#[test]
fn a_malformed_authorization_header_is_refused() {
    let auth = Auth::new(secure());
    let mut r = Request::new(());
    r.metadata_mut()
        .insert("authorization", "Basic abc".parse().expect("ascii"));
    let status = auth.admit(&r, Action::Read).expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[test]
fn ownership_is_by_token_name_unless_admin() {
    let sub = Caller {
        name: "alice".into(),
        role: Role::Submitter,
    };
    assert!(sub.owns(Some("alice")));
    assert!(!sub.owns(Some("bob")));
    assert!(!sub.owns(None));
    let admin = Caller {
        name: "root".into(),
        role: Role::Admin,
    };
    assert!(admin.owns(Some("bob")));
}

#[test]
fn rate_limits_are_per_caller_and_say_when_to_retry() {
    let mut config = secure();
    config.rate_limit = 1.0;
    config.rate_burst = 3.0;
    let auth = Auth::new(config);
    auth.replace_tokens(vec![record("a", Role::Viewer, "ta", None)]);
    for _ in 0..3 {
        assert!(auth.admit(&request(Some("ta")), Action::Read).is_ok());
    }
    let limited = auth
        .admit(&request(Some("ta")), Action::Read)
        .expect_err("limited");
    assert_eq!(limited.code(), tonic::Code::ResourceExhausted);
    let hint: u64 = limited
        .metadata()
        .get(RETRY_AFTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry hint");
    assert!(hint > 0 && hint <= 1000, "hint {hint}");
    // Another caller has its own bucket; the bootstrap admin has none.
    auth.replace_tokens(vec![
        record("a", Role::Viewer, "ta", None),
        record("b", Role::Viewer, "tb", None),
    ]);
    assert!(auth.admit(&request(Some("tb")), Action::Read).is_ok());
    for _ in 0..10 {
        assert!(auth.admit(&request(Some("boot")), Action::Read).is_ok());
    }
}

#[test]
fn in_flight_requests_are_bounded() {
    let mut config = secure();
    config.max_inflight = 2;
    let auth = Auth::new(config);
    let a = auth.admit(&request(Some("boot")), Action::Read).expect("1");
    let _b = auth.admit(&request(Some("boot")), Action::Read).expect("2");
    let full = auth
        .admit(&request(Some("boot")), Action::Read)
        .expect_err("full");
    assert_eq!(full.code(), tonic::Code::ResourceExhausted);
    assert!(full.metadata().get(RETRY_AFTER_HEADER).is_some());
    drop(a);
    assert!(auth.admit(&request(Some("boot")), Action::Read).is_ok());
}

#[test]
fn workers_need_the_join_token() {
    let auth = Auth::new(secure());
    let bare = Request::new(());
    assert_eq!(
        auth.admit_worker(&bare, "w1").expect_err("refused").code(),
        tonic::Code::Unauthenticated
    );
    let mut wrong = Request::new(());
    wrong
        .metadata_mut()
        .insert(JOIN_TOKEN_HEADER, "nope".parse().expect("ascii"));
    assert!(auth.admit_worker(&wrong, "w1").is_err());
    let mut right = Request::new(());
    right
        .metadata_mut()
        .insert(JOIN_TOKEN_HEADER, "join".parse().expect("ascii"));
    assert_eq!(auth.admit_worker(&right, "w1").ok(), Some("join-token"));
    // With mTLS only, a request without a certificate is refused.
    let mut mtls = secure();
    mtls.join_token = None;
    mtls.worker_certificates = true;
    let auth = Auth::new(mtls);
    assert!(auth.admit_worker(&Request::new(()), "w1").is_err());
}

#[test]
fn insecure_mode_admits_everyone_as_anonymous_admin() {
    let auth = Auth::new(AuthConfig {
        insecure: true,
        ..Default::default()
    });
    let admitted = auth
        .admit(&request(None), Action::ManageTokens)
        .expect("open");
    assert_eq!(admitted.caller.name, ANONYMOUS);
    assert!(auth.admit_worker(&Request::new(()), "w").is_ok());
}

#[test]
fn secrets_are_random_and_hashes_are_hex() {
    let a = generate_secret();
    let b = generate_secret();
    assert_ne!(a, b);
    assert!(a.starts_with("augur_") && a.len() == 6 + 64);
    let h = hash_secret(&a);
    assert_eq!(h.len(), 64);
    assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}

#[test]
fn debug_output_never_shows_secrets() {
    let text = format!("{:?}", secure());
    assert!(!text.contains("boot") && !text.contains("join\""), "{text}");
    assert!(text.contains("<set>"));
}

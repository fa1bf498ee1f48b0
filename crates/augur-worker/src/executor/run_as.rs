//! `--run-as USER`: the unprivileged identity job processes get.
//!
//! The user is resolved once, at start-up, with `getpwnam_r` (or `getpwuid_r`
//! for a number); an unknown user, or a worker that is not root but is asked
//! to run jobs as someone else, stops the worker before it registers. Each job
//! process then drops to that identity between `fork` and `exec`: supplementary
//! groups (`setgroups`, from `getgrouplist`), then `setgid`, then `setuid`, and
//! only then changes into its working directory, so the directory is entered
//! with the job's rights, not the worker's.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::PolicyError;

/// Largest buffer offered to `getpw*_r` before giving up on ERANGE.
const MAX_PASSWD_BUFFER: usize = 1 << 20;
/// Most supplementary groups collected for the job's user.
const MAX_GROUPS: usize = 65_536;

/// The identity job processes run under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name from the password database.
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups of the user (including `gid`).
    pub groups: Vec<libc::gid_t>,
    /// The user's home directory (`HOME` of the job; its default working dir).
    pub home: PathBuf,
    /// Whether ids must be changed at all: false when the worker already runs
    /// as exactly this user (then no privilege is needed).
    switch: bool,
}

impl RunAs {
    /// Resolves `user` (a name, or a numeric uid) and checks that this process
    /// may run jobs as that user.
    pub fn resolve(user: &str) -> Result<RunAs, PolicyError> {
        let entry = match user.parse::<libc::uid_t>() {
            Ok(uid) => lookup_uid(uid),
            Err(_) => lookup_name(user),
        }
        .map_err(|e| PolicyError::UserLookup {
            user: user.to_string(),
            error: e.to_string(),
        })?
        .ok_or_else(|| PolicyError::UnknownUser(user.to_string()))?;
        // SAFETY: geteuid takes no arguments and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 && euid != entry.uid {
            return Err(PolicyError::NotRoot {
                user: user.to_string(),
                uid: entry.uid,
                euid,
            });
        }
        let groups = if euid == 0 {
            group_list(&entry.name, entry.gid).map_err(|e| PolicyError::UserLookup {
                user: user.to_string(),
                error: format!("cannot list its groups: {e}"),
            })?
        } else {
            Vec::new()
        };
        Ok(RunAs {
            switch: euid == 0,
            name: entry.name,
            uid: entry.uid,
            gid: entry.gid,
            groups,
            home: entry.home,
        })
    }

    /// Makes `command` drop to this identity and then enter `working_dir`
    /// (or, if none was asked for, the user's home, falling back to `/` when
    /// the home cannot be entered).
    pub(super) fn apply(
        &self,
        command: &mut Command,
        working_dir: Option<&Path>,
    ) -> Result<(), String> {
        let c_path = |path: &Path| {
            CString::new(path.as_os_str().as_bytes())
                .map_err(|_| format!("path {path:?} contains a NUL byte"))
        };
        let (dir, must_enter) = match working_dir {
            Some(dir) => (c_path(dir)?, true),
            None => (c_path(&self.home)?, false),
        };
        let root = c"/";
        let switch = self.switch;
        let (uid, gid) = (self.uid, self.gid);
        let groups = self.groups.clone();
        let closure = move || -> io::Result<()> {
            // Only async-signal-safe calls below: this runs between fork and exec.
            // SAFETY: plain system calls on integers and on buffers owned by the
            // closure that outlive each call.
            unsafe {
                if switch
                    && (libc::setgroups(groups.len() as _, groups.as_ptr()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0)
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::chdir(dir.as_ptr()) != 0 {
                    if must_enter {
                        return Err(io::Error::last_os_error());
                    }
                    if libc::chdir(root.as_ptr()) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        };
        // SAFETY: the closure only makes async-signal-safe system calls and
        // allocates nothing (io::Error from an OS code does not allocate).
        unsafe { command.pre_exec(closure) };
        Ok(())
    }

    /// `name (uid N)`, for messages.
    pub fn describe(&self) -> String {
        format!("{} (uid {})", self.name, self.uid)
    }
}

/// One password database entry.
struct Entry {
    name: String,
    uid: libc::uid_t,
    gid: libc::gid_t,
    home: PathBuf,
}

fn lookup_name(name: &str) -> io::Result<Option<Entry>> {
    let Ok(c_name) = CString::new(name) else {
        return Ok(None);
    };
    lookup(|pwd, buf, len, result| {
        // SAFETY: every pointer is valid for the call; `buf` has `len` bytes.
        unsafe { libc::getpwnam_r(c_name.as_ptr(), pwd, buf, len, result) }
    })
}

fn lookup_uid(uid: libc::uid_t) -> io::Result<Option<Entry>> {
    lookup(|pwd, buf, len, result| {
        // SAFETY: every pointer is valid for the call; `buf` has `len` bytes.
        unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) }
    })
}

/// Calls a `getpw*_r` function, growing the buffer on ERANGE.
fn lookup(
    mut call: impl FnMut(
        *mut libc::passwd,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut libc::passwd,
    ) -> libc::c_int,
) -> io::Result<Option<Entry>> {
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    loop {
        // SAFETY: passwd is a plain C struct for which all-zero bytes are valid.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == libc::ERANGE && buf.len() < MAX_PASSWD_BUFFER {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success the strings point into `buf`, which is alive and
        // NUL-terminates them.
        let (name, home) = unsafe {
            (
                CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
                PathBuf::from(std::ffi::OsStr::from_bytes(
                    CStr::from_ptr(pwd.pw_dir).to_bytes(),
                )),
            )
        };
        return Ok(Some(Entry {
            name,
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home,
        }));
    }
}

/// The supplementary groups of `name`, including `gid`.
fn group_list(name: &str, gid: libc::gid_t) -> io::Result<Vec<libc::gid_t>> {
    let c_name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut count = groups.len() as libc::c_int;
        // SAFETY: `groups` has room for `count` entries; the name is NUL-terminated.
        let rc =
            unsafe { libc::getgrouplist(c_name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        let wanted = usize::try_from(count).unwrap_or(0);
        if rc >= 0 {
            groups.truncate(wanted.min(groups.len()));
            return Ok(groups);
        }
        if wanted <= groups.len() || wanted > MAX_GROUPS {
            return Err(io::Error::other(format!(
                "getgrouplist reported {count} groups"
            )));
        }
        groups.resize(wanted, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_user_resolves_by_name_and_by_uid() {
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        let by_uid = RunAs::resolve(&euid.to_string()).expect("the current uid has an entry");
        assert_eq!(by_uid.uid, euid);
        let by_name = RunAs::resolve(&by_uid.name).expect("resolve by name");
        assert_eq!(by_name, by_uid);
    }

    #[test]
    fn an_unknown_user_is_a_clear_error() {
        let err = RunAs::resolve("no-such-user-augur").expect_err("unknown user");
        assert_eq!(
            err.to_string(),
            "--run-as: no user \"no-such-user-augur\" on this machine"
        );
    }

    #[test]
    fn another_user_needs_root() {
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        let result = RunAs::resolve("nobody");
        if euid == 0 {
            let nobody = result.expect("root may run jobs as nobody");
            assert_ne!(nobody.uid, 0);
            assert!(nobody.groups.contains(&nobody.gid), "{nobody:?}");
        } else {
            let err = result.expect_err("only root may switch users");
            assert!(err.to_string().contains("not root"), "{err}");
        }
    }
}

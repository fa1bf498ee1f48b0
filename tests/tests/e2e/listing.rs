//! `ListJobs` newest first and filtered, page by page, agrees with the
//! plain ascending listing.

use augur_e2e::{Cluster, ClusterConfig};
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_client::JobServiceClient;

#[test]
fn newest_first_pages_are_the_ascending_list_reversed() {
    let cluster = Cluster::start(ClusterConfig {
        workers: 1,
        ..ClusterConfig::default()
    });
    let mut mark = 0;
    for i in 0..30 {
        if i == 20 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            mark = augur_core::now_ms();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let name = if i % 3 == 0 { "tri" } else { "other" };
        cluster.submit(&["--name", name, "--", "true"]);
    }
    let url = cluster.api_url(0);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = JobServiceClient::connect(url).await.expect("connect");
        let list_since = |client: &mut JobServiceClient<tonic::transport::Channel>,
                          newest_first: bool,
                          name: &str,
                          size: u32,
                          after_ms: i64| {
            let mut client = client.clone();
            let name = name.to_string();
            async move {
                let mut ids = Vec::new();
                let mut token = String::new();
                loop {
                    let page = client
                        .list_jobs(pb::ListJobsRequest {
                            page_size: size,
                            page_token: token.clone(),
                            newest_first,
                            name_contains: name.clone(),
                            submitted_after_ms: after_ms,
                            ..Default::default()
                        })
                        .await
                        .expect("list")
                        .into_inner();
                    ids.extend(page.jobs.iter().map(|j| j.id.clone()));
                    if page.next_page_token.is_empty() {
                        return ids;
                    }
                    token = page.next_page_token;
                }
            }
        };
        let ascending = list_since(&mut client, false, "", 1000, 0).await;
        assert_eq!(ascending.len(), 30);
        let mut reversed = ascending.clone();
        reversed.reverse();
        for size in [1, 7, 30, 100] {
            assert_eq!(
                list_since(&mut client, true, "", size, 0).await,
                reversed,
                "page size {size}"
            );
        }
        let tri = list_since(&mut client, true, "tri", 4, 0).await;
        assert_eq!(tri.len(), 10);
        let expected: Vec<String> = reversed
            .iter()
            .enumerate()
            .filter(|(k, _)| (29 - k) % 3 == 0)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(tri, expected, "filtered, newest first");
        // Submitted since a time: the last ten, either way.
        let recent = list_since(&mut client, true, "", 3, mark).await;
        assert_eq!(recent, reversed[..10].to_vec(), "newest first since");
        let recent = list_since(&mut client, false, "", 4, mark).await;
        assert_eq!(recent, ascending[20..].to_vec(), "ascending since");
        // The leader counts what waits by priority class: a high-priority
        // job no worker can run waits in the queue.
        client
            .submit_job(pb::SubmitJobRequest {
                spec: Some(pb::JobSpec {
                    command: "true".into(),
                    priority: 500,
                    resources: Some(pb::Resources {
                        slots: 1000,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })
            .await
            .expect("submitted");
        let status = client
            .cluster_status(pb::ClusterStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(status.queued_by_class.get("high"), Some(&1), "{status:?}");
    });
}

//! Requests that are not valid protobuf, sent as raw bytes past any client
//! library: a string field holding bytes that are not UTF-8 is the caller's
//! error (`InvalidArgument`, naming the field), not the server's (`Internal`),
//! and writes nothing.

use augur_e2e::{Cluster, ClusterConfig};
use augur_proto::v1 as pb;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::Status;

/// Sends and receives message bodies as they are.
#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use bytes::Buf;
        let mut body = vec![0; src.remaining()];
        src.copy_to_slice(&mut body);
        Ok(Some(body))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// A `SubmitJob` whose job name is not UTF-8: the valid encoding of a request
/// named `NAME!`, with those five bytes replaced by five that are not UTF-8.
fn submit_with_a_name_that_is_not_utf8() -> Vec<u8> {
    let request = pb::SubmitJobRequest {
        spec: Some(pb::JobSpec {
            name: "NAME!".into(),
            command: "true".into(),
            ..Default::default()
        }),
    };
    let mut body = request.encode_to_vec();
    let at = body
        .windows(5)
        .position(|w| w == b"NAME!")
        .expect("the name is in the encoding");
    body[at..at + 5].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28, 0xa0]);
    body
}

// Regression (issue 13, §4): answered `Internal`.
#[test]
fn a_string_field_that_is_not_utf8_is_an_invalid_argument_and_writes_nothing() {
    let cluster = Cluster::start(ClusterConfig::default());
    // One valid job, so the count below is known to count.
    cluster.submit(&["--", "true"]);
    assert_eq!(job_count(&cluster), 1);
    let url = cluster.api_url(0);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let status = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let path = PathAndQuery::from_static("/augur.v1.JobService/SubmitJob");
        grpc.unary(
            tonic::Request::new(submit_with_a_name_that_is_not_utf8()),
            path,
            RawCodec,
        )
        .await
        .expect_err("refused")
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("name"), "{status:?}");
    assert!(status.message().contains("UTF-8"), "{status:?}");
    assert_eq!(job_count(&cluster), 1, "the refused request wrote a job");
}

fn job_count(cluster: &Cluster) -> usize {
    let listed = cluster.cli_json(&["list"]);
    let jobs = if listed.is_array() {
        &listed
    } else {
        &listed["jobs"]
    };
    jobs.as_array()
        .unwrap_or_else(|| panic!("`augur list` JSON without jobs: {listed}"))
        .len()
}

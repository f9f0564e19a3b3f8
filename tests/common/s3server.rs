//! An S3 server in the test process (s3s + s3s-fs, SigV4 with one access key) on 127.0.0.1
//! port 0, for sites whose storage backend is S3. Objects are plain files under `root`:
//! `<root>/<bucket>/<key>`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use tokio::task::{JoinHandle, JoinSet};

pub const ACCESS_KEY: &str = "AKIAMIRRORGATETEST";
pub const SECRET_KEY: &str = "mirrorgate-test-secret-key";

pub struct S3Server {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl S3Server {
    pub async fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root).unwrap();
        let fs = s3s_fs::FileSystem::new(root).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            // Connections live in this set: aborting the accept task drops them all.
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                connections.spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        S3Server { addr, accept }
    }
}

impl S3Server {
    /// Stops serving at once: the listener and every open connection are dropped.
    pub fn stop(&self) {
        self.accept.abort();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The `[storage]` section of a site on S3 at `endpoint`, buckets prefixed with `prefix`.
pub fn s3_storage_config(endpoint: &str, prefix: &str) -> String {
    format!(
        "[storage]\nbackend = \"s3\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n\
         access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n\
         force_path_style = true\nbucket_prefix = \"{prefix}\"\n"
    )
}

//! A moto S3 server (PyPI `moto[server]`) on 127.0.0.1 for tests, started and stopped here;
//! std only, so other crates' tests include it by path (`#[path = ".../moto.rs"]`). Without
//! moto the tests say how to get it and skip, unless `WIT_REQUIRE_S3=1` (set by `.ci/run`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// A moto S3 server process on 127.0.0.1.
pub(crate) struct Moto {
    pub(crate) port: u16,
    pub(crate) child: Arc<Mutex<Option<Child>>>,
}

impl Moto {
    pub(crate) fn available() -> bool {
        let ok = Command::new("python3")
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("WIT_REQUIRE_S3").is_none(),
                "moto's S3 server is required here (pip install 'moto[server]')"
            );
            eprintln!("moto not installed: the S3 tests are skipped (pip install 'moto[server]'; .ci/run requires it)");
        }
        ok
    }

    pub(crate) fn start() -> Moto {
        let moto = Moto {
            port: free_port(),
            child: Arc::new(Mutex::new(None)),
        };
        moto.restart();
        moto
    }

    /// Starts the server (again, on the same port, empty) and creates the bucket `wit`.
    pub(crate) fn restart(&self) {
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        *self.child.lock().expect("lock") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) {
                // CreateBucket: moto does not check signatures.
                let request = "PUT /wit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                if conn.write_all(request.as_bytes()).is_ok() {
                    let mut reply = String::new();
                    let _ = conn.read_to_string(&mut reply);
                    if reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200") {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn kill(child: &Mutex<Option<Child>>) {
        if let Some(mut child) = child.lock().expect("lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        Moto::kill(&self.child);
    }
}

pub(crate) fn options(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("aws_endpoint", format!("http://127.0.0.1:{port}")),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", "test".into()),
        ("aws_secret_access_key", "test".into()),
        ("aws_region", "us-east-1".into()),
        ("aws_virtual_hosted_style_request", "false".into()),
    ]
}

impl Moto {
    /// Stops the server (the bucket and its objects are gone with it).
    pub(crate) fn stop(&self) {
        Moto::kill(&self.child);
    }
}

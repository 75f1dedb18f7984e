//! A real SMTP server for tests: Python's aiosmtpd writing a maildir, read back here.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SmtpServer {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let dir = std::env::temp_dir().join(format!("cp-smtp-{}", ulid::Ulid::new()));
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(dir.join(sub)).expect("maildir");
        }
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the test SMTP server (python3 -m aiosmtpd; pip install aiosmtpd): {e}")
            });
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                panic!("the test SMTP server did not start on port {port}; is aiosmtpd installed (pip install aiosmtpd)?");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpServer { port, dir, child }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every mail received so far, raw.
    pub fn mails(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.dir.join(sub)) {
                for e in entries.flatten() {
                    if let Ok(s) = std::fs::read_to_string(e.path()) {
                        out.push(s);
                    }
                }
            }
        }
        out
    }

    /// Waits for a mail to `to` whose text contains `marker`; returns the value after the
    /// marker (up to whitespace).
    pub async fn wait_for_token(&self, to: &str, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            for m in self.mails() {
                let unfolded = m.replace("=\r\n", "").replace("=\n", "");
                if unfolded
                    .to_ascii_lowercase()
                    .contains(&to.to_ascii_lowercase())
                {
                    if let Some(i) = unfolded.find(marker) {
                        let rest = &unfolded[i + marker.len()..];
                        let token: String = rest
                            .trim_start()
                            .chars()
                            .take_while(|c| !c.is_whitespace())
                            .collect();
                        return token.replace("=3D", "=");
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no mail to {to} containing {marker:?} arrived; got {:?}",
                    self.mails()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

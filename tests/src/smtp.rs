//! A real SMTP server for tests: Python's aiosmtpd writing a maildir, read back here.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct SmtpServer {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
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
        // A process starting: real time, outside the control plane.
        crate::wait::eventually(
            "the test SMTP server (python3 -m aiosmtpd; pip install aiosmtpd) listening",
            crate::wait::secs(15),
            async || {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| format!("port {port}: {e}"))
            },
        )
        .await;
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

    /// The value after `marker` (up to whitespace) in a mail to `to` received so far, if any.
    /// To wait until the control plane has sent what it queued, see
    /// [`crate::TestApp::mailed_token`].
    pub fn token(&self, to: &str, marker: &str) -> Option<String> {
        self.mails().into_iter().find_map(|m| {
            let unfolded = m.replace("=\r\n", "").replace("=\n", "");
            if !unfolded
                .to_ascii_lowercase()
                .contains(&to.to_ascii_lowercase())
            {
                return None;
            }
            let i = unfolded.find(marker)?;
            let token: String = unfolded[i + marker.len()..]
                .trim_start()
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            Some(token.replace("=3D", "="))
        })
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! A pseudo-terminal to drive `parley chat` as a person does: keys typed in (Enter, Ctrl-C,
//! Ctrl-D reach it through the terminal's line discipline, as signals and end of input),
//! the screen read back.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for something to appear before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// `parley` running in a terminal of its own.
pub struct Terminal {
    keys: File,
    child: Child,
    screen: Arc<Mutex<Vec<u8>>>,
    /// How far `expect` has read the screen.
    read: usize,
}

impl Terminal {
    /// Starts `parley ARGS` with `envs` in a new terminal (200 columns, so lines do not
    /// wrap).
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize { ws_row: 50, ws_col: 200, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two new descriptors into `master` and `slave`; a null name
        // and termios ask for the defaults (canonical input, echo, signals on).
        let opened = unsafe {
            libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size)
        };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // Neither end may leak into the processes other tests start meanwhile (a leaked
        // end would keep this terminal open after its program exits).
        for fd in [master, slave] {
            // SAFETY: fcntl on a descriptor just opened, setting only its close-on-exec flag.
            let set = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            assert_eq!(set, 0, "fcntl: {}", std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just opened and are owned by nobody else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
        command
            .args(args)
            .env_remove("PARLEY_TOKEN")
            .env_remove("PARLEY_URL")
            .env("PARLEY_LOG", "warn")
            .envs(envs.iter().copied())
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: between fork and exec this calls only async-signal-safe functions: a new
        // session whose controlling terminal is the pty (standard input), so Ctrl-C typed
        // there interrupts the program as it would in a real terminal.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("parley starts");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = File::from(master.try_clone().unwrap());
        let filled = screen.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // The read fails (EIO) once the program has exited and the terminal is closed.
            while let Ok(read) = reader.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                filled.lock().unwrap().extend_from_slice(&buffer[..read]);
            }
        });
        Self { keys: File::from(master), child, screen, read: 0 }
    }

    /// Types `text` and Enter.
    pub fn type_line(&mut self, text: &str) {
        self.keys.write_all(format!("{text}\r").as_bytes()).unwrap();
    }

    /// Presses Ctrl-C.
    pub fn ctrl_c(&mut self) {
        self.keys.write_all(b"\x03").unwrap();
    }

    /// Presses Ctrl-D at the start of a line (end of input).
    pub fn ctrl_d(&mut self) {
        self.keys.write_all(b"\x04").unwrap();
    }

    /// Everything shown so far, without the terminal's carriage returns.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// The bytes shown so far, without carriage returns (offsets into them stay valid as
    /// the screen grows, even while a character is half received).
    fn bytes(&self) -> Vec<u8> {
        self.screen.lock().unwrap().iter().copied().filter(|b| *b != b'\r').collect()
    }

    /// Waits until `text` appears on the screen past what earlier calls found, and moves
    /// past it; fails the test with the screen when it does not.
    pub async fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        let needle = text.as_bytes();
        loop {
            let bytes = self.bytes();
            let rest = bytes.get(self.read..).unwrap_or_default();
            if let Some(at) = rest.windows(needle.len()).position(|window| window == needle) {
                self.read += at + needle.len();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} did not appear on the terminal; it shows:\n{}\n(read up to byte {})",
                String::from_utf8_lossy(&bytes),
                self.read
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the whole screen so far shows `text` (wherever it is).
    pub async fn shows(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.screen().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{text:?} did not appear on the terminal; it shows:\n{}",
                self.screen()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the program to exit.
    pub async fn exited(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "parley did not exit; it shows:\n{}", self.screen());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

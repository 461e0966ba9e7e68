//! A guard for the processes a test starts.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};

/// A background process, stdin and stdout closed, its stderr collected line by line into
/// a log; killed (SIGKILL) on drop.
pub struct Process {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn spawn(command: Command) -> Self {
        Self::spawn_with_stdin(command, Stdio::null())
    }

    /// [`Process::spawn`] with the given standard input (a barrier pipe, for example).
    pub fn spawn_with_stdin(mut command: Command, stdin: Stdio) -> Self {
        let mut child = command
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {command:?}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Process { child: Some(child), log }
    }

    /// Guards a process started elsewhere (whose stderr is not collected).
    pub fn adopt(child: Child) -> Self {
        Process { child: Some(child), log: Arc::default() }
    }

    /// Its process id, while it has not been reaped.
    #[allow(dead_code)] // not every test binary looks at its processes from outside
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its stderr so far, one line per line.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Whether a line of its stderr so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|line| line.contains(text))
    }

    /// Its exit status if it has exited by itself; `None` while it runs, or once it was
    /// stopped through this guard.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().unwrap()
    }

    /// Sends `signal` to it (our own child: `ip netns exec` execs the program in place).
    pub fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe { libc::kill(pid, signal) };
    }

    /// SIGKILL, and waits for it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        super::terminate(self.child.take().expect("running"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Standard input for a process that reads a file from it (`beeline put - --as NAME`) and
/// must still be mid-transfer when the test acts: the first `held_at` bytes of `data` go
/// in at once, the rest only after [`GatedInput::release`], then the pipe closes. However
/// fast the put runs, it waits at the gate for more input.
pub struct GatedInput {
    release: Option<mpsc::Sender<()>>,
    feeder: Option<std::thread::JoinHandle<()>>,
}

impl GatedInput {
    pub fn new(data: Vec<u8>, held_at: usize) -> (Stdio, GatedInput) {
        use std::io::Write;
        assert!(held_at < data.len(), "the gate must hold something back");
        let (reader, mut writer) = std::io::pipe().unwrap();
        let (release, released) = mpsc::channel::<()>();
        let feeder = std::thread::spawn(move || {
            // A write fails only when the reader is gone (killed): nothing more to feed.
            if writer.write_all(&data[..held_at]).is_err() {
                return;
            }
            if released.recv().is_ok() {
                let _ = writer.write_all(&data[held_at..]);
            }
        });
        (Stdio::from(reader), GatedInput { release: Some(release), feeder: Some(feeder) })
    }

    /// Lets the rest of the data through, then closes the pipe.
    pub fn release(&mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
    }
}

impl Drop for GatedInput {
    fn drop(&mut self) {
        // Dropping the sender without a release ends the feeder without the rest.
        self.release.take();
        if let Some(feeder) = self.feeder.take() {
            let _ = feeder.join();
        }
    }
}

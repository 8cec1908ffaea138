//! Watching a VM: `ballast limit set --wait` and `ballast top`, the latter in a real terminal
//! (tmux), read back with `capture-pane` as a person would see it.

use super::*;

/// A VM with 8 MiB of guest RAM resident (its initrd) whose memory manager samples every
/// 0.2 s; the guest has no balloon driver and no agent, so it cannot give memory back.
fn watched_vm() -> Ballast {
    ballast(Launch {
        initrd_bytes: 8 << 20,
        args: &["--sample-interval", "0.2"],
        ..Launch::default()
    })
}

#[test]
fn limit_set_wait_returns_once_within_the_limit() {
    let b = watched_vm();
    let out = cli(&b, &["limit", "set", "60M", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "within the 60 MiB limit: resident 8.0 MiB\n",
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("resident 8.0 MiB -> 52.5 MiB (threshold of the 60 MiB limit)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn limit_set_wait_fails_when_the_guest_cannot_get_under_it() {
    let b = watched_vm();
    let out = cli(
        &b,
        &["limit", "set", "4M", "--wait", "--wait-timeout-s", "60"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("resident 8.0 MiB -> 3.5 MiB (threshold of the 4 MiB limit), reclaiming"),
        "{err}"
    );
    assert!(err.contains("last step inflate: asked"), "{err}");
    // What the VM says of itself is what the command ends with.
    let memory = b.json("/vm/memory");
    let state = memory["state"].as_str().unwrap();
    assert!(
        ["over_limit", "guest_unresponsive"].contains(&state),
        "{memory}"
    );
    assert!(
        err.contains(&format!("ballast: the VM is {state} at resident 8.0 MiB: ")),
        "{err}"
    );
}

/// A tmux server of the test's own, running one command in a 120x40 terminal.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(name: &str, command: &str) -> Self {
        let socket = format!("ballast-{name}-{}", std::process::id());
        let tmux = Tmux { socket };
        let status = tmux
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                "120",
                "-y",
                "40",
                command,
            ])
            .status()
            .expect("tmux is installed (make deps)");
        assert!(status.success());
        tmux
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket]).args(args);
        cmd
    }

    pub fn screen(&self) -> String {
        let out = self
            .cmd(&["capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows every one of `texts`; returns the screen.
    pub fn wait_for(&self, texts: &[&str]) -> String {
        let mut screen = String::new();
        let shown = eventually(Duration::from_secs(30), || {
            screen = self.screen();
            texts.iter().all(|t| screen.contains(t))
        });
        assert!(shown, "{texts:?} not on the screen:\n{screen}");
        screen
    }

    /// Waits until the program in the pane has put its terminal in raw mode (`stty` on the
    /// pane's tty shows `-icanon`): keys typed before that would be the terminal's, echoed and
    /// held for a whole line.
    pub fn wait_for_raw_mode(&self) {
        let out = self
            .cmd(&["display-message", "-p", "-t", "top", "#{pane_tty}"])
            .output()
            .unwrap();
        let tty = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut settings = String::new();
        let raw = eventually(Duration::from_secs(30), || {
            let out = Command::new("stty").args(["-F", &tty, "-a"]).output();
            settings = out.map_or(String::new(), |o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
            });
            settings.split_whitespace().any(|w| w == "-icanon")
        });
        assert!(raw, "the terminal {tty} never went raw: {settings}");
    }

    fn running(&self) -> bool {
        self.cmd(&["has-session", "-t", "top"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .cmd(&["kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn top_shows_the_limit_cut_and_the_steps_as_they_happen() {
    let b = watched_vm();
    let command = format!(
        "{} top --api-sock {} --interval 0.3",
        support::ballast_bin(),
        b.sock.display()
    );
    let tmux = Tmux::start("top", &command);
    tmux.wait_for(&[
        " api.sock ",
        "memory 64 MiB",
        "limit none",
        "resident 8.0 MiB",
        "memory state within_limit",
        "memory (MiB) over the last 2 minutes",
        "resident",
        "balloon",
        "state within_limit",
        "q quit",
    ]);

    let out = cli(&b, &["limit", "set", "4M"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let screen = tmux.wait_for(&[
        "limit 4 MiB",
        "threshold 3.5 MiB",
        "limit set to 4 MiB",
        "inflate: asked",
        "state reclaiming",
    ]);
    // The log is in order: the cut, then the step it caused.
    let cut = screen.find("limit set to 4 MiB").unwrap();
    let step = screen.find("inflate: asked").unwrap();
    assert!(cut < step, "{screen}");
    // With nothing to give back, the VM ends over its limit, and top says why.
    let memory = b.json("/vm/memory");
    let end = if memory["state"] == "reclaiming" {
        "memory state "
    } else {
        memory["state"].as_str().unwrap()
    };
    tmux.wait_for(&[end]);

    tmux.cmd(&["send-keys", "-t", "top", "q"]).status().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !tmux.running()),
        "top did not quit on q:\n{}",
        tmux.screen()
    );
}

#[test]
fn top_watches_every_vm_in_a_directory() {
    let (one, two) = (watched_vm(), watched_vm());
    let dir = support::TempDir::new("top-dir");
    // Hard links to the API sockets: connecting by either name reaches the same ballast.
    std::fs::hard_link(&one.sock, dir.0.join("one.sock")).unwrap();
    std::fs::hard_link(&two.sock, dir.0.join("two.sock")).unwrap();
    std::fs::write(dir.0.join("notes.txt"), "not a socket").unwrap();
    let out = cli(&two, &["limit", "set", "48M"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let command = format!(
        "{} top --dir {} --interval 0.3",
        support::ballast_bin(),
        dir.0.display()
    );
    let tmux = Tmux::start("top-dir", &command);
    let screen = tmux.wait_for(&[" VMs ", "one.sock", "two.sock", "up/down choose a VM"]);
    assert!(!screen.contains("notes.txt"), "{screen}");
    // The first VM is shown; down shows the second, with its limit.
    tmux.wait_for(&[" one.sock ", "limit none"]);
    tmux.cmd(&["send-keys", "-t", "top", "Down"])
        .status()
        .unwrap();
    tmux.wait_for(&[" two.sock ", "limit 48 MiB", "threshold 42.0 MiB"]);
    tmux.cmd(&["send-keys", "-t", "top", "q"]).status().unwrap();
    assert!(eventually(Duration::from_secs(10), || !tmux.running()));
}

#[test]
fn top_without_a_vm_is_one_error_line() {
    let out = Command::new(support::ballast_bin())
        .args(["top", "--api-sock", "/nonexistent/api.sock"])
        .env_remove("BALLAST_API_SOCK")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .starts_with("ballast: cannot connect to the ballast API at /nonexistent/api.sock"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(support::ballast_bin())
        .arg("top")
        .env_remove("BALLAST_API_SOCK")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--api-sock PATH"), "{}", stderr(&out));
}

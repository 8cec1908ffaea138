//! The console on a real terminal (a tmux pane): raw mode, so Ctrl-C reaches the guest, and
//! `Ctrl-A x` stops the VM and gives the terminal back as it was.

use super::watching::Tmux;
use super::*;

#[test]
fn on_a_terminal_keys_reach_the_guest_and_ctrl_a_x_stops_it() {
    let dir = support::TempDir::new("console");
    let kernel = dir.0.join("vmlinux");
    std::fs::write(&kernel, support::elf_kernel(&Guest::Echo.code())).unwrap();
    // A shell in the pane runs ballast, then says how it ended and how the terminal is set.
    let script = format!(
        "stty -a | grep -o -- '-\\?icanon' | sed 's/^/before: /'; \
         {} run --kernel {} --memory 64M --vcpus 1; \
         echo \"exit status $?\"; stty -a | grep -o -- '-\\?icanon' | sed 's/^/after: /'; \
         sleep 60",
        support::ballast_bin(),
        kernel.display()
    );
    let tmux = Tmux::start(
        "console",
        &format!("sh -c \"{}\"", script.replace('"', "\\\"")),
    );
    tmux.wait_for(&["before: icanon"]);
    tmux.wait_for_raw_mode();
    // Typed keys are echoed once, by the guest: the terminal neither echoes nor waits for Enter.
    tmux.cmd(&["send-keys", "-t", "top", "-l", "hello"])
        .status()
        .unwrap();
    tmux.wait_for(&["hello"]);
    assert!(!tmux.screen().contains("hellohello"), "{}", tmux.screen());
    // Ctrl-C is a key for the guest (it echoes it as '!'), not a signal for ballast.
    tmux.cmd(&["send-keys", "-t", "top", "C-c"])
        .status()
        .unwrap();
    tmux.wait_for(&["hello!"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!tmux.screen().contains("exit status"), "{}", tmux.screen());
    // Ctrl-A Ctrl-A sends one Ctrl-A (the guest echoes the byte; the screen shows nothing for
    // it), Ctrl-A x stops the VM: exit status 0, the terminal cooked again.
    tmux.cmd(&["send-keys", "-t", "top", "C-a", "C-a"])
        .status()
        .unwrap();
    tmux.cmd(&["send-keys", "-t", "top", "-l", "z"])
        .status()
        .unwrap();
    tmux.wait_for(&["hello!z"]);
    tmux.cmd(&["send-keys", "-t", "top", "C-a", "x"])
        .status()
        .unwrap();
    let screen = tmux.wait_for(&["exit status 0", "after: icanon"]);
    assert!(!screen.contains("after: -icanon"), "{screen}");
}

//! `ballast top`: a live terminal view of one VM, or of every VM whose API socket is in a
//! directory, drawn with ratatui on crossterm.
//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | the terminal, the keys and the refresh loop |
//! | `model.rs` | each VM's latest snapshot, chart history and log |
//! | `view.rs` | the drawing |

pub mod model;
pub mod view;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::cli::TopArgs;
use model::VmWatch;

pub fn run(args: &TopArgs) -> ExitCode {
    let sockets = match model::sockets(args.api_sock.as_deref(), args.dir.as_deref()) {
        Ok(sockets) => sockets,
        Err(message) => {
            eprintln!("ballast: {message}");
            return ExitCode::from(2);
        }
    };
    let mut vms: Vec<VmWatch> = sockets.iter().map(|s| VmWatch::new(s)).collect();
    let started = Instant::now();
    // Ask once before taking over the terminal, so an unreachable VM is a plain error line.
    for vm in &mut vms {
        vm.refresh(started);
    }
    if vms.len() == 1 {
        if let Some(e) = &vms[0].error {
            eprintln!("ballast: {e}");
            return ExitCode::from(2);
        }
    }
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(e) => {
            eprintln!("ballast: top needs a terminal: {e}");
            return ExitCode::from(2);
        }
    };
    let result = watch(&mut terminal, &mut vms, started, args.interval);
    ratatui::restore();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ballast: top: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Draws, waits for a key until the next refresh is due, refreshes; until `q`.
fn watch(
    terminal: &mut ratatui::DefaultTerminal,
    vms: &mut [VmWatch],
    started: Instant,
    interval: f64,
) -> std::io::Result<()> {
    let interval = Duration::from_secs_f64(interval);
    let mut chosen = 0;
    let mut next = Instant::now() + interval;
    loop {
        terminal.draw(|frame| view::draw(frame, vms, chosen))?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            if let Event::Key(key) = event::read()? {
                if key.kind != KeyEventKind::Press {
                    continue;
                }
                let ctrl_c =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                match key.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    _ if ctrl_c => return Ok(()),
                    KeyCode::Down | KeyCode::Char('j') | KeyCode::Tab => {
                        chosen = (chosen + 1) % vms.len();
                    }
                    KeyCode::Up | KeyCode::Char('k') | KeyCode::BackTab => {
                        chosen = (chosen + vms.len() - 1) % vms.len();
                    }
                    _ => {}
                }
            }
            continue;
        }
        for vm in vms.iter_mut() {
            vm.refresh(started);
        }
        next = Instant::now() + interval;
    }
}

//! How `ballast top` draws: a table of the VMs (when there are several), the chosen VM's
//! figures and memory state, a chart of its memory over the last two minutes, and its log of
//! reclaim steps and state changes.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::model::{Point, VmWatch, WINDOW};
use crate::client::watch::{mib, state_name, Snapshot};

/// The series on the chart: name, colour, and how to read it off a point.
type Series = (&'static str, Color, fn(&Point) -> Option<f64>);

const SERIES: [Series; 5] = [
    ("limit", Color::Red, |p| p.limit),
    ("threshold", Color::Yellow, |p| p.threshold),
    ("resident", Color::Cyan, |p| Some(p.resident)),
    ("working set", Color::Green, |p| p.working_set),
    ("balloon", Color::Magenta, |p| Some(p.balloon)),
];

pub fn draw(frame: &mut Frame, vms: &[VmWatch], chosen: usize) {
    let table_height = if vms.len() > 1 {
        vms.len() as u16 + 3
    } else {
        0
    };
    let [table, figures, chart, log, help] = Layout::vertical([
        Constraint::Length(table_height),
        Constraint::Length(5),
        Constraint::Min(8),
        Constraint::Length(9),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    if vms.len() > 1 {
        draw_table(frame, table, vms, chosen);
    }
    let vm = &vms[chosen];
    draw_figures(frame, figures, vm);
    draw_chart(frame, chart, vm);
    draw_log(frame, log, vm);
    let keys = if vms.len() > 1 {
        "q quit   up/down choose a VM"
    } else {
        "q quit"
    };
    frame.render_widget(Paragraph::new(keys).style(Style::new().dim()), help);
}

fn draw_table(frame: &mut Frame, area: Rect, vms: &[VmWatch], chosen: usize) {
    let header = Row::new([
        "vm",
        "state",
        "limit",
        "resident",
        "balloon",
        "memory state",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = vms.iter().enumerate().map(|(i, vm)| {
        let cells = match &vm.latest {
            Some(s) if vm.error.is_none() => [
                vm.name.clone(),
                format!("{:?}", s.vm.state).to_lowercase(),
                limit_text(s),
                mib(s.memory.resident_bytes),
                format!("{} MiB", s.memory.balloon_actual_mib),
                state_name(s.memory.state).to_string(),
            ],
            _ => [
                vm.name.clone(),
                "unreachable".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ],
        };
        let style = if i == chosen {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        Row::new(cells).style(style)
    });
    let widths = [
        Constraint::Percentage(24),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(10),
        Constraint::Min(12),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(" VMs "));
    frame.render_widget(table, area);
}

fn limit_text(s: &Snapshot) -> String {
    s.memory
        .limit_mib
        .map_or_else(|| "none".to_string(), |l| format!("{l} MiB"))
}

fn draw_figures(frame: &mut Frame, area: Rect, vm: &VmWatch) {
    let block = Block::bordered().title(format!(" {} ", vm.name));
    let Some(s) = &vm.latest else {
        let text = vm.error.as_deref().unwrap_or("asking the VM...");
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    };
    let m = &s.memory;
    let dim = Style::new().dim();
    let figure = |name: &str, value: String| {
        [
            Span::styled(format!("{name} "), dim),
            Span::raw(format!("{value}   ")),
        ]
    };
    let mut first = Vec::new();
    first.extend(figure("vm", format!("{:?}", s.vm.state).to_lowercase()));
    first.extend(figure("memory", format!("{} MiB", m.memory_mib)));
    first.extend(figure("limit", limit_text(s)));
    if let Some(t) = s.threshold_bytes() {
        first.extend(figure("threshold", mib(t)));
    }
    let mut second = Vec::new();
    second.extend(figure("resident", mib(m.resident_bytes)));
    second.extend(figure(
        "working set",
        m.working_set_bytes
            .map_or_else(|| "unknown".to_string(), mib),
    ));
    second.extend(figure(
        "balloon",
        format!(
            "{} MiB (target {} MiB)",
            m.balloon_actual_mib, m.balloon_target_mib
        ),
    ));
    let colour = match m.state {
        crate::api::MemoryState::WithinLimit => Color::Green,
        crate::api::MemoryState::Reclaiming => Color::Yellow,
        _ => Color::Red,
    };
    let mut third = vec![
        Span::styled("memory state ", dim),
        Span::styled(state_name(m.state), Style::new().fg(colour).bold()),
    ];
    if let Some(reason) = &m.state_reason {
        third.push(Span::raw(format!(": {reason}")));
    }
    if let Some(e) = &vm.error {
        third = vec![Span::styled(e.clone(), Style::new().fg(Color::Red))];
    }
    let text = vec![Line::from(first), Line::from(second), Line::from(third)];
    frame.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: true }).block(block),
        area,
    );
}

fn draw_chart(frame: &mut Frame, area: Rect, vm: &VmWatch) {
    let series: Vec<Vec<(f64, f64)>> = SERIES
        .iter()
        .map(|(_, _, read)| {
            vm.history
                .iter()
                .filter_map(|p| read(p).map(|v| (p.t, v)))
                .collect()
        })
        .collect();
    let datasets = SERIES
        .iter()
        .zip(&series)
        .filter(|(_, points)| !points.is_empty())
        .map(|((name, colour, _), points)| {
            Dataset::default()
                .name(*name)
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(*colour))
                .data(points)
        })
        .collect();
    let end = vm.history.back().map_or(0.0, |p| p.t);
    let start = (end - WINDOW.as_secs_f64()).max(0.0);
    let top = vm
        .latest
        .as_ref()
        .map_or(1.0, |s| s.memory.memory_mib as f64)
        .max(1.0);
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(" memory (MiB) over the last 2 minutes "))
        .x_axis(
            Axis::default()
                .bounds([start, start + WINDOW.as_secs_f64()])
                .labels([format!("{start:.0} s"), format!("{:.0} s", start + 120.0)]),
        )
        .y_axis(Axis::default().bounds([0.0, top]).labels([
            "0".to_string(),
            format!("{:.0}", top / 2.0),
            format!("{top:.0}"),
        ]))
        .hidden_legend_constraints((Constraint::Percentage(50), Constraint::Percentage(50)));
    frame.render_widget(chart, area);
}

fn draw_log(frame: &mut Frame, area: Rect, vm: &VmWatch) {
    let rows = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = vm
        .log
        .iter()
        .skip(vm.log.len().saturating_sub(rows))
        .map(|l| Line::raw(l.as_str()))
        .collect();
    let block = Block::bordered().title(" reclaim steps and state changes ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

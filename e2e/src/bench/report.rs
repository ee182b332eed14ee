//! The run's report: the markdown table (printed and in results.md), results.json and
//! startup.svg, with the machine and the versions measured.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::results::{Results, SetupResults};
use super::stats::{ratio, Summary};
use super::svg;
use crate::paths;

/// nproc, memory, kernel, cgroup layout and CPU model of this machine.
pub fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    m.insert(
        "nproc".into(),
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_default(),
    );
    let meminfo = read("/proc/meminfo");
    if let Some(l) = meminfo.lines().find(|l| l.starts_with("MemTotal:")) {
        m.insert(
            "memory".into(),
            l.trim_start_matches("MemTotal:").trim().into(),
        );
    }
    m.insert(
        "kernel".into(),
        read("/proc/sys/kernel/osrelease").trim().into(),
    );
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2 (unified)"
    } else if Path::new("/sys/fs/cgroup/unified").is_dir() {
        "v1 (hybrid: cgroup2 at /sys/fs/cgroup/unified)"
    } else {
        "v1"
    };
    m.insert("cgroup".into(), cgroup.into());
    let cpuinfo = read("/proc/cpuinfo");
    if let Some(l) = cpuinfo.lines().find(|l| l.starts_with("model name")) {
        m.insert(
            "cpu".into(),
            l.split_once(':').map(|x| x.1.trim()).unwrap_or("").into(),
        );
    }
    if let Some(l) = read("/etc/os-release")
        .lines()
        .find(|l| l.starts_with("PRETTY_NAME="))
    {
        m.insert("os".into(), l[13..].trim_matches('"').into());
    }
    m
}

/// The git commit of the checkout and the versions of everything measured.
pub fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let first_line = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    let repo = paths::repo_root();
    let commit = first_line(
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["rev-parse", "HEAD"]),
    );
    let dirty = !first_line(Command::new("git").arg("-C").arg(&repo).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_empty();
    v.insert(
        "gantry commit".into(),
        format!("{commit}{}", if dirty { " (modified)" } else { "" }),
    );
    if let Ok(k) = paths::tool("kubelet") {
        v.insert(
            "kubelet".into(),
            first_line(Command::new(k).arg("--version")),
        );
    }
    if let Ok(k) = paths::tool("kube-apiserver") {
        v.insert(
            "kube-apiserver".into(),
            first_line(Command::new(k).arg("--version")),
        );
    }
    for tool in ["containerd", "runc"] {
        if let Ok(p) = paths::system_tool(tool) {
            v.insert(tool.into(), first_line(Command::new(p).arg("--version")));
        }
    }
    v.insert(
        "cri-tools".into(),
        std::fs::read_to_string(repo.join("e2e/tools/cri-tools/VERSION"))
            .unwrap_or_default()
            .trim()
            .into(),
    );
    v
}

struct Row {
    name: String,
    unit: &'static str,
    g: Summary,
    r: Summary,
    /// Ratio on p99s (true) or medians.
    on_p99: bool,
    target: String,
    met: Option<bool>,
}

fn rows(res: &Results) -> Vec<Row> {
    let (g, r) = (&res.gantry, &res.reference);
    let mut rows = Vec::new();
    let mut add = |name: &str, unit, gs: &[f64], rs: &[f64], on_p99, target: &str, met| {
        rows.push(Row {
            name: name.to_string(),
            unit,
            g: Summary::of(gs),
            r: Summary::of(rs),
            on_p99,
            target: target.to_string(),
            met,
        })
    };
    let p1 = (Summary::of(&g.p1_running), Summary::of(&r.p1_running));
    let p1_met = (!g.p1_running.is_empty() && !r.p1_running.is_empty())
        .then(|| p1.0.p99 <= 0.5 && ratio(p1.0.p99, p1.1.p99) <= 0.4);
    add(
        "P1 create → Running",
        "s",
        &g.p1_running,
        &r.p1_running,
        true,
        "p99 ≤ 0.5 s and ≤ 0.4×",
        p1_met,
    );
    add(
        "P1 create → Ready",
        "s",
        &g.p1_ready,
        &r.p1_ready,
        true,
        "",
        None,
    );
    add(
        "P2 all Running (per round)",
        "s",
        &g.p2_all_running,
        &r.p2_all_running,
        false,
        "",
        None,
    );
    add(
        "P2 all Ready (per round)",
        "s",
        &g.p2_all_ready,
        &r.p2_all_ready,
        false,
        "",
        None,
    );
    let mem = |s: &SetupResults, f: &dyn Fn(&super::results::MemoryResult) -> u64| {
        s.memory
            .as_ref()
            .map(|m| vec![f(m) as f64 / 1048576.0])
            .unwrap_or_default()
    };
    let ga = mem(g, &|m| m.agent.rss_bytes);
    let ra = mem(r, &|m| m.agent.rss_bytes);
    let p3_met = (!ga.is_empty() && !ra.is_empty()).then(|| ratio(ga[0], ra[0]) <= 0.2);
    let pods = g.memory.as_ref().map(|m| m.pods).unwrap_or(0);
    add(
        &format!("P3 agent RSS ({pods} pods)"),
        "MiB",
        &ga,
        &ra,
        false,
        "≤ 0.2×",
        p3_met,
    );
    add(
        "P3 agent PSS",
        "MiB",
        &mem(g, &|m| m.agent.pss_bytes),
        &mem(r, &|m| m.agent.pss_bytes),
        false,
        "",
        None,
    );
    add(
        "P3 containerd RSS",
        "MiB",
        &mem(g, &|m| m.containerd.rss_bytes),
        &mem(r, &|m| m.containerd.rss_bytes),
        false,
        "",
        None,
    );
    add(
        "P3 shims RSS (total)",
        "MiB",
        &mem(g, &|m| m.shims.rss_bytes),
        &mem(r, &|m| m.shims.rss_bytes),
        false,
        "",
        None,
    );
    add(
        "P3 shims PSS (total)",
        "MiB",
        &mem(g, &|m| m.shims.pss_bytes),
        &mem(r, &|m| m.shims.pss_bytes),
        false,
        "",
        None,
    );
    let cpu = |s: &SetupResults, f: &dyn Fn(&super::results::CpuResult) -> f64| {
        s.cpu
            .as_ref()
            .map(|c| vec![f(c) * 60.0 / c.window_seconds.max(1.0)])
            .unwrap_or_default()
    };
    let gc = cpu(g, &|c| c.agent_seconds);
    let rc = cpu(r, &|c| c.agent_seconds);
    let p4_met = (!gc.is_empty() && !rc.is_empty()).then(|| ratio(gc[0], rc[0]) <= 0.1);
    add(
        "P4 agent CPU per 60 s idle",
        "s",
        &gc,
        &rc,
        false,
        "≤ 0.1×",
        p4_met,
    );
    add(
        "P4 containerd CPU per 60 s",
        "s",
        &cpu(g, &|c| c.containerd_seconds),
        &cpu(r, &|c| c.containerd_seconds),
        false,
        "",
        None,
    );
    add(
        "P4 shims CPU per 60 s",
        "s",
        &cpu(g, &|c| c.shims_seconds),
        &cpu(r, &|c| c.shims_seconds),
        false,
        "",
        None,
    );
    let ops: Vec<&String> = g.p5.keys().chain(r.p5.keys()).collect();
    let mut seen = Vec::new();
    for op in ops {
        if seen.contains(&op) {
            continue;
        }
        seen.push(op);
        let gs = g.p5.get(op).cloned().unwrap_or_default();
        let rs = r.p5.get(op).cloned().unwrap_or_default();
        let met = (!gs.is_empty() && !rs.is_empty())
            .then(|| ratio(Summary::of(&gs).median, Summary::of(&rs).median) <= 0.7);
        add(
            &format!("P5 {op}"),
            "ms",
            &ms(&gs),
            &ms(&rs),
            false,
            "≤ 0.7×",
            met,
        );
    }
    add(
        "P6 delete (grace 0) → gone",
        "s",
        &g.p6_delete,
        &r.p6_delete,
        false,
        "",
        None,
    );
    let per_min = |q: &Option<super::audit::Requests>| {
        q.as_ref()
            .map(|q| vec![q.total as f64 * 60.0 / res.window_seconds.max(1.0)])
            .unwrap_or_default()
    };
    add(
        "P7 API requests/min, idle (no pods)",
        "req",
        &per_min(&g.requests_idle),
        &per_min(&r.requests_idle),
        false,
        "",
        None,
    );
    add(
        &format!("P7 API requests/min, {pods} pods"),
        "req",
        &per_min(&g.requests_busy),
        &per_min(&r.requests_busy),
        false,
        "",
        None,
    );
    rows
}

fn ms(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x * 1000.0).collect()
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The markdown report: headline table, floor, phase breakdown, P7 by request kind.
pub fn markdown(res: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Gantry benchmark, {}\n", res.date);
    let _ = writeln!(
        s,
        "Gantry = `gantry node` on its embedded CRI; reference = upstream kubelet on containerd's CRI plugin; same bed, containerd, runc, CNI, images and control plane. {} round(s), A B alternated{}. Medians and p99s; ratio = Gantry / reference (p99s for P1, medians otherwise). Wall time {:.0} s.\n",
        res.rounds,
        if res.quick { ", quick mode (fewer pods, 20 s windows)" } else { "" },
        res.wall_seconds
    );
    let _ = writeln!(s, "| metric | unit | Gantry median | Gantry p99 | reference median | reference p99 | ratio | target | met |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---|---|");
    for r in rows(res) {
        let rt = if r.on_p99 {
            ratio(r.g.p99, r.r.p99)
        } else {
            ratio(r.g.median, r.r.median)
        };
        let (gm, gp) = if r.g.n == 0 {
            (f64::NAN, f64::NAN)
        } else {
            (r.g.median, r.g.p99)
        };
        let (rm, rp) = if r.r.n == 0 {
            (f64::NAN, f64::NAN)
        } else {
            (r.r.median, r.r.p99)
        };
        let single = r.g.n <= 1 && r.r.n <= 1;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.unit,
            num(gm),
            if single { "".into() } else { num(gp) },
            num(rm),
            if single { "".into() } else { num(rp) },
            if rt.is_nan() {
                "–".into()
            } else {
                format!("{rt:.2}×")
            },
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            }
        );
    }
    let fl: Vec<f64> = res.floor.iter().map(|f| f.total).collect();
    if !fl.is_empty() {
        let part = |f: &dyn Fn(&super::floor::FloorSample) -> f64| {
            Summary::of(&res.floor.iter().map(f).collect::<Vec<_>>())
        };
        let (t, n, c, rr) = (
            Summary::of(&fl),
            part(&|f| f.netns),
            part(&|f| f.cni_add),
            part(&|f| f.runc_run),
        );
        let _ = writeln!(
            s,
            "\n**Floor** (bare runc + fresh netns + CNI ADD, {} runs; no agent, no containerd): median {:.3} s, p99 {:.3} s (netns {:.3}, CNI ADD {:.3}, runc run {:.3} s median). P1 Gantry p99 / floor median = {:.1}×.\n",
            t.n,
            t.median,
            t.p99,
            n.median,
            c.median,
            rr.median,
            ratio(Summary::of(&res.gantry.p1_running).p99, t.median)
        );
    }
    let _ = writeln!(s, "\n## Where a pod start goes (P1, mean per pod, ms)\n");
    let _ = writeln!(s, "From each node's kubelet_runtime_operations_duration_seconds (sums over the P1 runs) and Gantry's gantry_cri_cni_duration_seconds; the rest is the mean create call → Running seen on the watch minus the phases (API, the agent's own work, status update, watch delivery).\n");
    let _ = writeln!(s, "| setup | phase | ms |\n|---|---|---:|");
    for (label, sr, gantry) in [
        ("Gantry", &res.gantry, true),
        ("reference", &res.reference, false),
    ] {
        for (p, v) in sr.phases(gantry) {
            let _ = writeln!(s, "| {label} | {p} | {:.1} |", v * 1000.0);
        }
    }
    let _ = writeln!(
        s,
        "\n## P7: API requests by kind (per window of {:.0} s)\n",
        res.window_seconds
    );
    for (label, sr) in [("Gantry", &res.gantry), ("reference", &res.reference)] {
        for (when, q) in [
            ("idle", &sr.requests_idle),
            ("with pods", &sr.requests_busy),
        ] {
            if let Some(q) = q {
                let kinds: Vec<String> =
                    q.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
                let _ = writeln!(s, "- {label}, {when}: {} — {}", q.total, kinds.join(", "));
            }
        }
    }
    let _ = writeln!(s, "\n## Machine and versions\n");
    for (k, v) in res.machine.iter().chain(res.versions.iter()) {
        let _ = writeln!(s, "- {k}: {v}");
    }
    for n in &res.notes {
        let _ = writeln!(s, "- note: {n}");
    }
    s
}

/// Writes results.md, results.json and startup.svg into `out`; returns the markdown.
pub fn write(res: &Results, out: &Path) -> Result<String> {
    let md = markdown(res);
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(res)?)?;
    let floor: Vec<f64> = res.floor.iter().map(|f| f.total).collect();
    let gp = res.gantry.phases(true);
    let rp = res.reference.phases(false);
    let picture = svg::render(
        &format!("P1 pod startup, image present ({})", res.date),
        &[
            svg::Series {
                label: "Gantry (gantry node, embedded CRI)",
                color: "#e15759",
                samples: &res.gantry.p1_running,
            },
            svg::Series {
                label: "reference (kubelet + containerd CRI)",
                color: "#4e79a7",
                samples: &res.reference.p1_running,
            },
            svg::Series {
                label: "floor (runc + netns + CNI ADD)",
                color: "#59a14f",
                samples: &floor,
            },
        ],
        &[
            svg::Bar {
                label: "Gantry",
                parts: &gp,
            },
            svg::Bar {
                label: "reference",
                parts: &rp,
            },
        ],
    );
    std::fs::write(out.join("startup.svg"), picture)?;
    Ok(md)
}

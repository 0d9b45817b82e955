//! gen -> memcached and backup -> memcached through the pump, beside the ceiling measured in the
//! same run against the same server: a minimal raw writer streaming prebuilt SETQ packets
//! (100-byte values) with a NOOP every 1000 over one and two connections. The backup directory
//! is written once, before the rounds. The raw writer and the pump take turns: seven rounds of
//! the seven rows, the order rotating so that every row takes every place once, after one
//! untimed round that fills the server; every row writes the same keys over the ones already
//! there (no flush_all between rows). Each figure is the median of its rounds; beside it, the
//! median of the round-by-round ratios and the ratio of best rounds.
//!
//! Two layouts, each with its own memcached and its own table:
//! - PINNED (the usual way to bench a client against a server): memcached under `taskset` on
//!   one CPU (`-t 1`), this process (raw writer and pump: every runtime thread inherits the
//!   affinity set before the runtime is built) on another. It measures whether the pump keeps
//!   up with the server, not how two processes split the CPUs. Skipped, saying so, without
//!   `taskset` or 2 CPUs.
//! - SHARED: memcached (`-t 2`) and this process on all the CPUs, as before: there the pump's
//!   own CPU is taken from memcached, which the raw writer (almost no CPU) does not do.
//!
//! Each table also prints the Cpus_allowed_list of every thread of both processes (proof the
//! pinning took), the load average, and, over all the rounds, CPU microseconds per item of the
//! bench and of memcached and memcached's CPU over the wall time.
//!
//! `cargo bench -p pump-benches --bench memcached` (Debian's memcached must be installed).
//! `PUMP_BENCH_ITEMS` sets the item count (1,000,000); `PUMP_BENCH_LAYOUT=pinned` (or `shared`)
//! runs only that table.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pump_protocol::packet::encode_request;
use pump_protocol::Opcode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VALUE: usize = 100;
const PER_NOOP: usize = 1000;
/// memcached's `-t` in the pinned layout: one worker thread for its one core (two would take
/// turns on it; in a 300,000-item trial, -t 2 pinned was no faster: 859 k against 910 k).
const PINNED_THREADS: usize = 1;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts memcached with `-t threads`, under `taskset -c cpu` when `cpu` is given.
fn start_memcached(threads: usize, cpu: Option<usize>) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), "memcached"]);
            c
        }
        None => Command::new("memcached"),
    };
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
        .args(["-m", "1024", "-t", &threads.to_string(), "-c", "1024"]);
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "root"]);
    }
    // taskset execs memcached: the child's pid is memcached's.
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start memcached");
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "memcached did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// The distinct `Cpus_allowed_list` values of every thread of process `pid` ("self" too).
fn cpus_allowed(pid: &str) -> String {
    let mut lists: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|t| {
                let status = std::fs::read_to_string(t.ok()?.path().join("status")).ok()?;
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .map(|v| v.trim().to_string())
            })
            .collect()
        })
        .unwrap_or_default();
    lists.sort();
    lists.dedup();
    if lists.is_empty() {
        "unknown".into()
    } else {
        lists.join(" / ")
    }
}

/// The CPUs this thread may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Restricts the calling thread (and every thread it starts from now on) to `cpus`.
fn set_affinity(cpus: &[usize]) {
    // SAFETY: as above; sched_setaffinity only reads the set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    let size = std::mem::size_of::<libc::cpu_set_t>();
    let rc = unsafe { libc::sched_setaffinity(0, size, &set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity({cpus:?}): {}",
        std::io::Error::last_os_error()
    );
}

/// True when `taskset -c cpu` runs a command.
fn taskset_works(cpu: usize) -> bool {
    Command::new("taskset")
        .args(["-c", &cpu.to_string(), "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// CPU seconds (user + system) process `pid` has used so far, from /proc; NaN if unreadable.
fn proc_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th of them (14th and 15th of the line).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Ticks of CPU `cpu` (all CPUs when `None`) from /proc/stat: (idle + iowait, steal, total).
fn cpu_ticks(cpu: Option<usize>) -> (f64, f64, f64) {
    let name = cpu.map_or("cpu".to_string(), |c| format!("cpu{c}"));
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
    else {
        return (f64::NAN, f64::NAN, f64::NAN);
    };
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal (guest time is within user).
    (at(3) + at(4), at(7), (0..8).map(at).sum())
}

/// Read system calls process `pid` has made so far, from /proc; NaN if unreadable.
fn proc_reads(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("syscr:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(f64::NAN)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Prebuilt buffers of PER_NOOP SETQ packets each, then one NOOP: items `from..to`.
fn prebuilt(from: usize, to: usize) -> Vec<bytes::Bytes> {
    let value = vec![b'v'; VALUE];
    let extras = [0u8; 8];
    (from..to)
        .step_by(PER_NOOP)
        .map(|start| {
            let mut b = BytesMut::with_capacity(PER_NOOP * (24 + 8 + 16 + VALUE) + 24);
            for i in start..(start + PER_NOOP).min(to) {
                let key = format!("pymc{i}");
                encode_request(
                    &mut b,
                    Opcode::SetQ,
                    0,
                    i as u32,
                    0,
                    0,
                    &extras,
                    key.as_bytes(),
                    &value,
                );
            }
            encode_request(&mut b, Opcode::Noop, 0, 0, 0, 0, &[], &[], &[]);
            b.freeze()
        })
        .collect()
}

/// Streams the buffers over one connection and waits for every NOOP answer.
async fn raw_stream(port: u16, bufs: Vec<bytes::Bytes>) {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    let (mut r, mut w) = s.into_split();
    let expect = bufs.len();
    let writer = tokio::spawn(async move {
        for b in bufs {
            w.write_all(&b).await.unwrap();
        }
        w
    });
    let mut noops = 0;
    let mut head = [0u8; 24];
    while noops < expect {
        r.read_exact(&mut head).await.unwrap();
        let body = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let mut skip = vec![0u8; body];
        r.read_exact(&mut skip).await.unwrap();
        assert_eq!(u16::from_be_bytes([head[6], head[7]]), 0, "a SETQ failed");
        if head[1] == 0x0a {
            noops += 1;
        }
    }
    drop(writer.await.unwrap());
}

/// The raw writer's buffers for `items` over `conns` connections.
fn ceiling_buffers(items: usize, conns: usize) -> Vec<Vec<bytes::Bytes>> {
    let per = items.div_ceil(conns);
    (0..conns)
        .map(|c| prebuilt(c * per, ((c + 1) * per).min(items)))
        .collect()
}

/// items/s of the raw writer, one connection per list of buffers.
async fn ceiling(port: u16, items: usize, bufs: Vec<Vec<bytes::Bytes>>) -> f64 {
    let t = Instant::now();
    let tasks: Vec<_> = bufs
        .into_iter()
        .map(|b| tokio::spawn(raw_stream(port, b)))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    items as f64 / t.elapsed().as_secs_f64()
}

/// items/s of `source` -> memcached through the pump library.
async fn through_pump(source: &str, port: u16, items: usize, threads: usize) -> f64 {
    let sink = format!("memcached://127.0.0.1:{port}");
    let secs = pump_benches::transfer(source, &sink, threads, items as u64).await;
    items as f64 / secs
}

fn mb(items_per_s: f64) -> f64 {
    items_per_s * (VALUE + 10) as f64 / 1e6
}

/// One layout: where memcached and the bench run.
struct Layout {
    title: String,
    /// memcached's `-t`.
    threads: usize,
    /// (memcached's CPU, the bench's CPU) when pinned.
    pinned: Option<(usize, usize)>,
}

const NAMES: [&str; 7] = [
    "ceiling, raw SETQ writer, 1 conn",
    "ceiling, raw SETQ writer, 2 conns",
    "pump gen -> memcached, -t 1",
    "pump gen -> memcached, -t 2",
    "pump gen -> memcached, -t 4",
    "pump backup -> memcached, -t 2",
    "pump backup -> memcached, -t 4",
];

/// The median of `v` (the mean of the middle two when even); NaN when empty.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs every row of `layout` for `rounds` rounds, the order rotating, and prints the table.
fn run_layout(layout: &Layout, items: usize, gen: &str, backup: &str, rounds: usize) {
    let all = allowed_cpus();
    if let Some((_, bench)) = layout.pinned {
        set_affinity(&[bench]);
    }
    // Built after the affinity is set: every worker and blocking thread inherits it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = start_memcached(layout.threads, layout.pinned.map(|(mc, _)| mc));
    let port = server.port;
    let mc_pid = server.child.id();
    let load_before = loadavg();
    println!("{}", layout.title);
    println!(
        "  memcached 1.6 (-m 1024 -t {} -c 1024), {items} items of {VALUE}-byte values, {rounds} rounds after an untimed one",
        layout.threads
    );
    // The machine is shared: the raw writer and the pump take turns, round after round, so
    // both see the same load. The order of the rows rotates from round to round, so that
    // every row runs as often first as last (a row's speed depended on its place). Each
    // figure is the median of its rounds; the best round is printed too. Every row writes
    // the same keys, over the ones already there, so that each meets the same server: all
    // the keys present, memory allocated and faulted in, nothing flushed or evicted (with a
    // flush_all before each row, the figures depended on the row's place in the run). Round 0
    // is untimed: it fills the server and settles it (the first rows after a fill were
    // slower than the same rows later).
    let rows = NAMES.len();
    let mut every: [Vec<f64>; 7] = Default::default();
    // Summed over the rounds: (the bench process's CPU seconds, memcached's, wall seconds).
    let mut cpu = [(0.0f64, 0.0f64, 0.0f64); 7];
    // Summed over the rounds, ticks of memcached's CPU (all CPUs when shared): idle, steal,
    // total.
    let mut ticks = [(0.0f64, 0.0f64, 0.0f64); 7];
    // Summed over the rounds, memcached's read system calls.
    let mut calls = [0.0f64; 7];
    let mc_cpu = layout.pinned.map(|(mc, _)| mc);
    for round in 0..=rounds {
        for i in (0..rows).map(|k| (k + round.saturating_sub(1)) % rows) {
            // Built before the counters are read: the raw writer's figures are its sending.
            let bufs = (i < 2).then(|| ceiling_buffers(items, i + 1));
            let (me, mc) = (
                pump_benches::cpu_seconds(pump_benches::Who::SelfProcess),
                proc_cpu_seconds(mc_pid),
            );
            let t0 = cpu_ticks(mc_cpu);
            let c0 = proc_reads(mc_pid);
            let r = match (i, bufs) {
                (0 | 1, Some(bufs)) => rt.block_on(ceiling(port, items, bufs)),
                (2..=4, _) => rt.block_on(through_pump(gen, port, items, [1, 2, 4][i - 2])),
                _ => rt.block_on(through_pump(backup, port, items, [2, 4][i - 5])),
            };
            let t1 = cpu_ticks(mc_cpu);
            let c1 = proc_reads(mc_pid);
            if round == 0 {
                continue;
            }
            // The timed seconds (the pump's open and close, or building packets, left out).
            cpu[i].2 += items as f64 / r;
            ticks[i].0 += t1.0 - t0.0;
            ticks[i].1 += t1.1 - t0.1;
            ticks[i].2 += t1.2 - t0.2;
            calls[i] += c1 - c0;
            cpu[i].0 += pump_benches::cpu_seconds(pump_benches::Who::SelfProcess) - me;
            cpu[i].1 += proc_cpu_seconds(mc_pid) - mc;
            every[i].push(r);
        }
    }
    // Read while the runtime's threads and memcached are still there.
    let bench_cpus = cpus_allowed("self");
    let mc_cpus = cpus_allowed(&mc_pid.to_string());
    // The ceiling is the better of the raw writer's two rows: by median, by best round, and
    // round by round (the pump's row against the raw writer in the same round).
    let medians: Vec<f64> = every.iter().map(|rs| median(rs)).collect();
    let bests: Vec<f64> = every
        .iter()
        .map(|rs| rs.iter().copied().fold(0.0, f64::max))
        .collect();
    let ceiling = medians[0].max(medians[1]);
    let best_ceiling = bests[0].max(bests[1]);
    let paired = |i: usize| {
        let ratios: Vec<f64> = (0..every[i].len())
            .map(|r| every[i][r] / every[0][r].max(every[1][r]))
            .collect();
        median(&ratios)
    };
    // The last columns cover all the rounds: CPU microseconds per item of the bench process
    // and of memcached; memcached's CPU time over the timed seconds (100%: one core kept
    // busy); idle and steal of memcached's CPU (of all CPUs when shared) from /proc/stat, over
    // the untimed open and close too; memcached's read system calls per 1000 items
    // (/proc/PID/io).
    println!(
        "  {:<34} {:>25}  {:>9} {:>7} {:>7}  {:>7} {:>7} {:>5} {:>5} {:>5} {:>6}",
        "",
        "median",
        "median /",
        "paired",
        "best /",
        "bench",
        "memcd",
        "memcd",
        "cpu",
        "cpu",
        "memcd"
    );
    println!(
        "  {:<34} {:>25}  {:>9} {:>7} {:>7}  {:>7} {:>7} {:>5} {:>5} {:>5} {:>6}",
        "", "", "ceiling", "median", "best", "us/item", "us/item", "busy", "idle", "steal", "rd/1k"
    );
    for (i, name) in NAMES.iter().enumerate() {
        let r = medians[i];
        print!("  {name:<34} {r:>10.0} items/s {:>7.1} MB/s", mb(r));
        if name.starts_with("pump") {
            print!(
                "  {:>8.1}% {:>6.1}% {:>6.1}%",
                100.0 * r / ceiling,
                100.0 * paired(i),
                100.0 * bests[i] / best_ceiling
            );
        } else {
            print!("  {:>9} {:>7} {:>7}", "", "", "");
        }
        let per = |s: f64| 1e6 * s / (rounds * items) as f64;
        let (me, mc, wall) = cpu[i];
        let (idle, steal, total) = ticks[i];
        let per_k = |n: f64| 1e3 * n / (rounds * items) as f64;
        println!(
            "  {:>7.2} {:>7.2} {:>4.0}% {:>4.0}% {:>4.0}% {:>6.1}",
            per(me),
            per(mc),
            100.0 * mc / wall,
            100.0 * idle / total,
            100.0 * steal / total,
            per_k(calls[i]),
        );
    }
    // One figure per path, as for the ceiling: its best `-t` by median.
    for (path, rows) in [("gen -> memcached", 2..5), ("backup -> memcached", 5..7)] {
        let i = rows
            .max_by(|&a, &b| medians[a].total_cmp(&medians[b]))
            .expect("rows");
        println!(
            "  {path:<20} {:.1}% of the ceiling ({}: {:.0} against {:.0} items/s, medians)",
            100.0 * medians[i] / ceiling,
            NAMES[i].rsplit(", ").next().unwrap_or(""),
            medians[i],
            ceiling
        );
    }
    println!("  every round, k items/s:");
    for (name, rs) in NAMES.iter().zip(&every) {
        let rs: Vec<String> = rs.iter().map(|r| format!("{:.0}", r / 1e3)).collect();
        println!("    {name:<34} {}", rs.join(" "));
    }
    println!("  Cpus_allowed_list: bench threads {bench_cpus}; memcached threads {mc_cpus}");
    println!("  load average: {load_before} before, {} after", loadavg());
    drop(server);
    drop(rt);
    if layout.pinned.is_some() {
        set_affinity(&all);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let items: usize = std::env::var("PUMP_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // As many rounds as rows: with the rotation, every row takes every place once.
    let rounds = NAMES.len();
    let gen = format!("gen:max-items={items},min-value-size={VALUE}");
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let backup = backup.to_str().unwrap();
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(pump_benches::transfer(&gen, backup, 2, items as u64));
    }
    let cpus = allowed_cpus();
    let mut layouts = Vec::new();
    let taskset = cpus.first().is_some_and(|&c| taskset_works(c));
    if cpus.len() >= 2 && taskset {
        layouts.push(Layout {
            title: format!(
                "PINNED: memcached on CPU {} (taskset), the bench (raw writer, pump) on CPU {}",
                cpus[0], cpus[1]
            ),
            threads: PINNED_THREADS,
            pinned: Some((cpus[0], cpus[1])),
        });
    } else {
        println!(
            "PINNED layout skipped: needs taskset and 2 CPUs (allowed: {cpus:?}, taskset {})",
            if taskset {
                "works"
            } else {
                "missing or failing"
            }
        );
    }
    layouts.push(Layout {
        title: format!("SHARED: memcached and the bench on the same CPUs {cpus:?}"),
        threads: 2,
        pinned: None,
    });
    // PUMP_BENCH_LAYOUT=pinned or shared runs only that table.
    let only = std::env::var("PUMP_BENCH_LAYOUT").ok();
    for layout in layouts.iter().filter(|l| {
        only.as_deref()
            .is_none_or(|o| l.title.to_lowercase().starts_with(&o.to_lowercase()))
    }) {
        run_layout(layout, items, &gen, backup, rounds);
        println!();
    }
}

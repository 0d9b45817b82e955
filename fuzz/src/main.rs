//! `pump-fuzz TARGET|all [--minutes N] [--seed S]`: runs fuzz targets for N minutes each (1 by
//! default) and prints each one's executions per second; `pump-fuzz list` names them;
//! `pump-fuzz write-corpus DIR` writes the corpus of damaged backup files again. Exits 1 on the
//! first failure, printing the smallest input that fails.

use std::time::{Duration, Instant};

use pump_fuzz::{runner, target, TARGETS};

fn usage() -> ! {
    eprintln!("usage: pump-fuzz TARGET|all [--minutes N] [--seed S] | list | write-corpus DIR");
    eprintln!(
        "targets: {}",
        TARGETS
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(what) = args.first() else { usage() };
    match what.as_str() {
        "list" => {
            for t in TARGETS {
                println!("{:<12} {}", t.name, t.about);
            }
            return;
        }
        "write-corpus" => {
            let Some(dir) = args.get(1) else { usage() };
            match pump_fuzz::cbb::write_corpus(std::path::Path::new(dir)) {
                Ok(files) => files.iter().for_each(|f| println!("{}", f.display())),
                Err(e) => {
                    eprintln!("pump-fuzz: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
        _ => {}
    }
    let mut minutes = 1.0f64;
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut i = 1;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--minutes", Some(v)) => minutes = v.parse().unwrap_or_else(|_| usage()),
            ("--seed", Some(v)) => seed = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
        i += 2;
    }
    let targets: Vec<_> = if what == "all" {
        TARGETS.iter().collect()
    } else {
        vec![target(what).unwrap_or_else(|| usage())]
    };
    let watchdog = pump_fuzz::start_watchdog(Duration::from_secs(120));
    for t in targets {
        let budget = Duration::from_secs_f64(minutes * 60.0);
        let started = Instant::now();
        let cases_before = pump_fuzz::cases_run();
        let mut rounds = 0u64;
        while started.elapsed() < budget {
            let round_seed = seed.wrapping_add(rounds.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut r = runner(500, round_seed);
            if let Err(e) = (t.run)(&mut r) {
                eprintln!(
                    "pump-fuzz {}: FAILED (seed {round_seed}, after {} cases):\n{e}",
                    t.name,
                    pump_fuzz::cases_run() - cases_before
                );
                std::process::exit(1);
            }
            rounds += 1;
        }
        let n = pump_fuzz::cases_run() - cases_before;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<12} {n:>10} cases in {secs:>7.1} s  {:>10.0} exec/s  nothing found",
            t.name,
            n as f64 / secs
        );
    }
    drop(watchdog);
}

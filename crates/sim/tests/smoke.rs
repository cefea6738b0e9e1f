use pgherd_sim::*;

#[test]
fn smoke() {
    let n: u64 = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let base: u64 = std::env::var("BASE").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut opts = Options::default();
    if std::env::var("WA").is_ok() { opts.workarounds = Workarounds::all(); }
    let t = std::time::Instant::now();
    let mut by_kind = std::collections::BTreeMap::new();
    let mut events = 0;
    let mut simt = 0;
    for seed in base..base + n {
        let out = run_seed(seed, &opts);
        events += out.stats.events;
        simt += out.stats.end;
        if let Some(v) = &out.violation {
            let e = by_kind.entry(format!("{:?}", v.invariant)).or_insert_with(Vec::new);
            e.push(seed);
        }
    }
    println!("{n} seeds in {:?}, {events} events, {} s simulated", t.elapsed(), simt / 1000);
    for (k, v) in &by_kind {
        println!("{k}: {} e.g. {:?}", v.len(), &v[..v.len().min(10)]);
    }
}

#[test]
fn show() {
    let Some(seed) = std::env::var("SEED").ok().and_then(|v| v.parse().ok()) else { return };
    let lines: usize = std::env::var("LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(80);
    let mut opts = Options::default();
    if std::env::var("WA").is_ok() { opts.workarounds = Workarounds::all(); }
    println!("{}", failure_report(seed, &opts, lines));
}

//! The parts of `minimax bench` that say where decode time goes: the adapter's bandwidth
//! roofline (our own WGSL read kernel), a per-kernel profile of decode steps (launches and
//! device time by kernel, host time to enqueue a step), and the decode matmul kernel alone on
//! the model's weight shapes, in every launch variant.

use std::time::Instant;

use burn::tensor::{DType, Distribution, Int, Tensor, TensorData};
use minimax_runtime::experts::QMatrix;
use minimax_runtime::generate::read_logits;
use minimax_runtime::kernels::argmax::argmax;
use minimax_runtime::kernels::qgemv::{self, Epilogue, Launch, Pool, XMode};
use minimax_runtime::kernels::stream_read::stream_read;
use minimax_runtime::model::{Logits, Model, State};
use minimax_runtime::profile::{Profile, Profiler};
use minimax_runtime::weights::StoredDType;

use crate::common::Result;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Waits for every queued GPU command (a read-back of a few bytes queued after them).
fn sync(t: Tensor<1>) -> Result<()> {
    pollster::block_on(read_logits(t.narrow(0, 0, 1).unsqueeze_dim(0)))?;
    Ok(())
}

/// `(host, total)` seconds per call of `f`: `batch` calls queued back to back (host: until
/// the last returned), then one sync (total: until it is done); medians over `rounds` such
/// batches, after one warm-up batch.
fn time_batched(batch: usize, rounds: usize, f: &mut dyn FnMut() -> Result<Tensor<1>>) -> Result<(f64, f64)> {
    let (mut host, mut total) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let start = Instant::now();
        let mut last = None;
        for _ in 0..batch {
            last = Some(f()?);
        }
        let enqueued = start.elapsed().as_secs_f64();
        sync(last.expect("batch > 0"))?;
        if round > 0 {
            host.push(enqueued / batch as f64);
            total.push(start.elapsed().as_secs_f64() / batch as f64);
        }
    }
    Ok((median(host), median(total)))
}

/// The roofline: bytes per second of `stream_read` over a buffer of `bytes` (rounded to
/// 16 bytes), filled with random values, with enough threads to fill a large GPU.
pub fn roofline(model: &Model, bytes: u64) -> Result<f64> {
    let n = (bytes / 16 * 4) as usize;
    let data = Tensor::<1>::random([n], Distribution::Uniform(-1.0, 1.0), &model.device);
    let threads = 256 * 8192;
    let (_, seconds) = time_batched(10, 5, &mut || Ok(stream_read(&data, threads)?))?;
    Ok((n * 4) as f64 / seconds)
}

/// What one decode step does, from `steps` steps after the ones already in `state`.
pub struct StepProfile {
    /// Median host seconds from calling `forward` until it returned (everything enqueued).
    pub enqueue: f64,
    /// Median seconds per greedy step, including the read-back of the token.
    pub step: f64,
    /// Launches per step by kernel (counted over all steps, divided by `steps`).
    pub launches: Profile,
    /// Device time per kernel (summed over all steps, divided by `steps`).
    pub timed: Profile,
    pub steps: usize,
    /// The cost of one launch apart from its work: host seconds to enqueue one launch of a
    /// trivial kernel, and seconds per launch until a run of them has finished.
    pub launch: (f64, f64),
    /// Seconds per recorded step when `steps` of them are enqueued back to back and only the
    /// last token is read: the device's time per step with nothing on the host in its way.
    /// `None` where steps are not recorded.
    pub device_fed: Option<f64>,
}

/// One greedy decode step, unpipelined (the profile keeps host and device apart; `generate`
/// enqueues the next step before it reads this one's token): the forward pass, the argmax on
/// the device and one integer read back. Returns the host seconds until the step was enqueued (before
/// the read-back waits for the device), and the next token.
pub fn greedy_step(model: &Model, state: &mut State, token: u32) -> Result<(f64, u32)> {
    let start = Instant::now();
    let logits = pollster::block_on(model.forward(&[token], state, Logits::Last))?;
    let id = argmax(logits)?;
    let enqueue = start.elapsed().as_secs_f64();
    let id = pollster::block_on(id.into_data_async()).map_err(|e| format!("{e:?}"))?;
    let id = id.convert::<i64>().try_to_vec::<i64>().map_err(|e| format!("{e:?}"))?;
    Ok((enqueue, id[0] as u32))
}

/// Host seconds to enqueue, and seconds, of each of `steps` greedy steps from `token`.
pub struct Steps {
    pub enqueue: Vec<f64>,
    pub seconds: Vec<f64>,
    /// The token the last step chose.
    pub next: u32,
}

/// `steps` greedy decode steps (see [`greedy_step`]), each timed.
pub fn greedy_steps(model: &Model, state: &mut State, token: u32, steps: usize) -> Result<Steps> {
    let mut out = Steps { enqueue: Vec::new(), seconds: Vec::new(), next: token };
    for _ in 0..steps {
        let start = Instant::now();
        let (enqueue, next) = greedy_step(model, state, out.next)?;
        out.seconds.push(start.elapsed().as_secs_f64());
        out.enqueue.push(enqueue);
        out.next = next;
    }
    Ok(out)
}

pub fn profile_decode(model: &Model, state: &mut State, steps: usize) -> Result<StepProfile> {
    let mut token = 5u32;
    let mut run = |state: &mut State| -> Result<(Vec<f64>, Vec<f64>)> {
        let s = greedy_steps(model, state, token, steps)?;
        token = s.next;
        Ok((s.enqueue, s.seconds))
    };
    let (enqueue, step) = run(state)?;
    let counting = Profiler::start(false);
    run(state)?;
    let launches = pollster::block_on(counting.finish());
    let timing = Profiler::start(true);
    run(state)?;
    let timed = pollster::block_on(timing.finish());
    let device_fed = if model.decodes_on_device() { Some(device_fed(model, state, token, steps)?) } else { None };
    Ok(StepProfile { enqueue: median(enqueue), step: median(step), launches, timed, steps, launch: launch_cost(model)?, device_fed })
}

/// Seconds per recorded decode step, `steps` of them replayed back to back from `token`
/// after one recorded (and one warm-up), then one read of the last token: what bounds a step
/// when the host is out of the way. The state advances by `steps + 2` tokens.
fn device_fed(model: &Model, state: &mut State, token: u32, steps: usize) -> Result<f64> {
    use minimax_runtime::model::decode_graph::DecodeGraph;
    let ids = Tensor::<1, Int>::from_data(TensorData::new(vec![token as i32], [1]), &model.device);
    let mut graph = DecodeGraph::new(model, state, ids, steps + 2)?;
    let read = |graph: &DecodeGraph| -> Result<()> {
        pollster::block_on(graph.ids().clone().into_data_async()).map_err(|e| format!("{e:?}"))?;
        Ok(())
    };
    // The warm-up and the recording, then the timed replays.
    pollster::block_on(graph.step(model, state))?;
    pollster::block_on(graph.step(model, state))?;
    read(&graph)?;
    let start = Instant::now();
    for _ in 0..steps {
        pollster::block_on(graph.step(model, state))?;
    }
    read(&graph)?;
    Ok(start.elapsed().as_secs_f64() / steps as f64)
}

/// Host seconds to enqueue, and seconds until done, per launch of a trivial kernel (one
/// workgroup reading 64 floats into a new output, as a decode kernel allocates its own), over
/// runs of 1000 launches: what a decode step pays per launch on top of the work.
fn launch_cost(model: &Model) -> Result<(f64, f64)> {
    let data = Tensor::<1>::zeros([64], &model.device);
    time_batched(1000, 3, &mut || Ok(stream_read(&data, 16)?))
}

/// One decode-kernel measurement: a weight shape in a format, under one launch variant.
pub struct KernelRow {
    pub name: String,
    pub launch: String,
    pub seconds: f64,
    pub bytes: u64,
}

/// Times `qgemv` on one row of input against each weight shape of the model (`[N, K]`), in
/// F16, Q8_0 and Q4_1, with every workgroup size and reduction the adapter supports. Several
/// weights are rotated so that the L2 cache holds none of them between calls.
pub fn kernels(model: &Model, subgroups: bool) -> Result<Vec<KernelRow>> {
    let c = &model.config;
    let device = &model.device;
    let (h, hd, f) = (c.hidden_size, c.num_heads * c.head_dim, c.ffn.intermediate_size());
    let shapes = [
        ("qkv_proj", 3 * hd, h),
        ("out_proj", h, hd),
        ("expert gate_up", 2 * f, h),
        ("expert down", h, f),
        ("lm_head block", c.vocab_size.min(1 << 16), h),
    ];
    let mut launches = Vec::new();
    for workgroup in [64, 128, 256] {
        launches.push(Launch { workgroup, subgroups: false, unroll: None });
        if subgroups {
            launches.push(Launch { workgroup, subgroups: true, unroll: None });
        }
    }
    let mut rows = Vec::new();
    for dtype in [StoredDType::F16, StoredDType::Q8_0, StoredDType::Q4_1] {
        for (name, n, k) in shapes {
            let Some(row_bytes) = dtype.row_bytes(k) else { continue };
            let bytes = (n * row_bytes) as u64;
            // Enough copies to exceed a 60 MB L2 several times over.
            let copies = (256u64 << 20).div_ceil(bytes).clamp(2, 8) as usize;
            let weights: Vec<Weight> = (0..copies).map(|i| Weight::random(dtype, n, k, i as u64, device)).collect();
            let x = Tensor::<2>::random([1, k], Distribution::Normal(0.0, 1.0), device);
            let ids = Tensor::<1, Int>::from_data(TensorData::new(vec![0i32], [1]), device);
            let table = Tensor::<1, Int>::from_data(TensorData::new(vec![0i32], [1]), device);
            let m = QMatrix { dtype, rows: n, cols: k, offset: 0 };
            for launch in &launches {
                let mut i = 0;
                let (_, seconds) = time_batched(40, 5, &mut || {
                    i += 1;
                    let pool = weights[i % copies].pool();
                    let mode = XMode::Rows { per: 1 };
                    let y = qgemv::run(x.clone(), ids.clone(), &table, pool, None, Epilogue::None, m, mode, Some(*launch))?;
                    Ok(y.reshape([n]))
                })?;
                rows.push(KernelRow {
                    name: format!("{name} [{n}, {k}] {}", dtype.name()),
                    launch: format!("wg {}{}", launch.workgroup, if launch.subgroups { " subgroups" } else { "" }),
                    seconds,
                    bytes,
                });
            }
        }
    }
    Ok(rows)
}

/// A random weight as the decode kernel reads it.
enum Weight {
    Float(Tensor<2>),
    Words(Tensor<1, Int>),
}

impl Weight {
    fn random(dtype: StoredDType, n: usize, k: usize, seed: u64, device: &burn::tensor::Device) -> Self {
        if dtype == StoredDType::F16 {
            return Self::Float(Tensor::<2>::random([n, k], Distribution::Normal(0.0, 0.02), (device, DType::F16)));
        }
        // Random bytes are valid blocks except for their f16 scales, so blocks are built from
        // random rows on the host, a few rows at a time.
        let bytes = minimax_runtime::experts::synthetic::random_matrix(dtype, n, k, seed, 0.02);
        Self::Words(minimax_runtime::weights::quantized::words(bytes, device))
    }

    fn pool(&self) -> Pool<'_> {
        match self {
            Self::Float(w) => Pool::Float(w),
            Self::Words(w) => Pool::Words(w),
        }
    }
}

/// Prints a step profile as a table, most device time first.
pub fn print_profile(p: &StepProfile) {
    let n = p.steps as f64;
    println!();
    println!(
        "unpipelined decode step: {:.3} ms ({:.3} ms to enqueue on the host), {:.1} launches, {:.3} ms of kernel time on the device{}",
        p.step * 1e3,
        p.enqueue * 1e3,
        p.launches.launches() as f64 / n,
        p.timed.seconds() / n * 1e3,
        if p.timed.host_timed > 0 {
            format!(" ({} launches timed on the host: timestamp queries ran out)", p.timed.host_timed)
        } else {
            String::new()
        }
    );
    if let Some(fed) = p.device_fed {
        println!(
            "recorded decode step, {} enqueued back to back: {:.3} ms ({:.1} tokens/s): the device's time per step",
            p.steps,
            fed * 1e3,
            1.0 / fed
        );
    }
    println!(
        "one launch of a trivial kernel: {:.1} µs to enqueue on the host, {:.1} µs until done (runs of 1000)",
        p.launch.0 * 1e6,
        p.launch.1 * 1e6
    );
    print_kernels(&p.timed, n, "step");
}

/// A profile's kernels as a table, most device time first, per `n` `what`s.
fn print_kernels(timed: &Profile, n: f64, what: &str) {
    println!("| kernel | launches per {what} | ms per {what} | share of kernel time |");
    println!("|---|---:|---:|---:|");
    let total = timed.seconds().max(1e-12);
    for k in &timed.kernels {
        let ms = k.seconds.map(|s| format!("{:.3}", s / n * 1e3)).unwrap_or_else(|| "—".into());
        let share = k.seconds.map(|s| format!("{:.1}%", 100.0 * s / total)).unwrap_or_else(|| "—".into());
        println!("| {} | {:.1} | {ms} | {share} |", k.name, k.launches as f64 / n);
    }
}

/// Where one prefill of `tokens` goes, kernel by kernel: seconds until its logits were read
/// (with timestamp queries on, so a little slower than untimed) and the device profile.
pub fn profile_prefill(model: &Model, tokens: &[u32]) -> Result<(f64, Profile)> {
    let timing = Profiler::start(true);
    let start = Instant::now();
    let mut state = model.new_state();
    pollster::block_on(async { read_logits(model.forward(tokens, &mut state, Logits::Last).await?).await })?;
    let seconds = start.elapsed().as_secs_f64();
    Ok((seconds, pollster::block_on(timing.finish())))
}

/// Prints a prefill profile of `len` tokens.
pub fn print_prefill_profile(len: usize, seconds: f64, timed: &Profile) {
    println!();
    println!(
        "prefill of {len} tokens, profiled: {:.3} ms, {} launches, {:.3} ms of kernel time on the device{}",
        seconds * 1e3,
        timed.launches(),
        timed.seconds() * 1e3,
        if timed.host_timed > 0 { format!(" ({} launches timed on the host)", timed.host_timed) } else { String::new() }
    );
    print_kernels(timed, 1.0, "prefill");
}

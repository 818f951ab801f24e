//! ONNX Runtime: loading the shared library and running a voice model.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights};
use ort::session::Session;
use ort::value::Tensor;

use crate::VoiceError;

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    /// CUDA; needs onnxruntime-gpu's library and a GPU.
    Cuda { device_id: i32 },
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads the ONNX Runtime shared library (once per process).
pub fn environment(library: &Path) -> Result<&'static Environment, VoiceError> {
    let result = ENVIRONMENT.get_or_init(|| {
        if !library.is_file() {
            return Err(format!(
                "ONNX Runtime library not found at {} (run scripts/setup, or set VOXPROOF_ORT_LIB to libonnxruntime.so)",
                library.display()
            ));
        }
        ort::init_from(library)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?
            .with_name("voxproof")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", library.display()))
    });
    result
        .as_ref()
        .map_err(|message| VoiceError::Runtime(message.clone()))
}

/// Scales and speaker for one model call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelInputs {
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
    pub speaker_id: Option<i64>,
}

/// A pool of ONNX Runtime sessions over one voice model, so several sentences render at once.
#[derive(Debug)]
pub struct VoiceModel {
    sessions: Vec<Mutex<Session>>,
    wants_speaker: bool,
    run_nanos: AtomicU64,
    runs: AtomicU64,
}

fn build_session(
    env: &Environment,
    model: &Path,
    options: &PoolOptions,
    prepacked: &PrepackedWeights,
) -> Result<Session, VoiceError> {
    let runtime_error = |e: ort::Error| VoiceError::Runtime(format!("{}: {e}", model.display()));
    let mut builder = Session::builder(env)
        .map_err(runtime_error)?
        // Everything ONNX Runtime offers, as piper-tts gets from Python's defaults.
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| runtime_error(e.into()))?
        .with_intra_threads(options.intra_threads.max(1))
        .map_err(|e| runtime_error(e.into()))?
        .with_inter_threads(1)
        .map_err(|e| runtime_error(e.into()))?
        .with_prepacked_weights(prepacked)
        .map_err(|e| runtime_error(e.into()))?;
    if let ExecutionProvider::Cuda { device_id } = options.provider {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default()
                .with_device_id(device_id)
                .build()
                .error_on_failure()])
            .map_err(|e| runtime_error(e.into()))?;
    }
    builder.commit_from_file(model).map_err(runtime_error)
}

/// How to build the session pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub library: PathBuf,
    pub provider: ExecutionProvider,
    /// Number of sessions (parallel model calls).
    pub sessions: usize,
    /// Threads inside each model call.
    pub intra_threads: usize,
}

impl VoiceModel {
    pub fn load(model: &Path, options: &PoolOptions) -> Result<Self, VoiceError> {
        let env = environment(&options.library)?;
        // Weights that ONNX Runtime re-lays out for its kernels are kept once for the pool,
        // not once per session.
        let prepacked = PrepackedWeights::new();
        // Sessions are built concurrently: each spends most of a second optimizing the graph.
        let sessions: Vec<Session> = std::thread::scope(|scope| {
            let builders: Vec<_> = (0..options.sessions.max(1))
                .map(|_| scope.spawn(|| build_session(env, model, options, &prepacked)))
                .collect();
            builders
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect::<Result<_, _>>()
        })?;
        let wants_speaker = sessions[0]
            .inputs()
            .iter()
            .any(|input| input.name() == "sid");
        Ok(Self {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            wants_speaker,
            run_nanos: AtomicU64::new(0),
            runs: AtomicU64::new(0),
        })
    }

    pub fn pool_size(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the model takes a speaker id (multi-speaker voice).
    pub fn wants_speaker(&self) -> bool {
        self.wants_speaker
    }

    /// Renders phoneme ids to mono samples in [-1, 1] on session `slot` of the pool.
    pub fn infer(
        &self,
        slot: usize,
        ids: &[i64],
        inputs: &ModelInputs,
    ) -> Result<Vec<f32>, VoiceError> {
        let err = |e: ort::Error| VoiceError::Runtime(format!("model call failed: {e}"));
        let length = ids.len() as i64;
        let input = Tensor::from_array(([1usize, ids.len()], ids.to_vec())).map_err(err)?;
        let lengths = Tensor::from_array(([1usize], vec![length])).map_err(err)?;
        let scales = Tensor::from_array((
            [3usize],
            vec![inputs.noise_scale, inputs.length_scale, inputs.noise_w],
        ))
        .map_err(err)?;
        let mut session = self.sessions[slot % self.sessions.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = Instant::now();
        let outputs = if self.wants_speaker {
            let sid = Tensor::from_array(([1usize], vec![inputs.speaker_id.unwrap_or(0)])).map_err(err)?;
            session.run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales, "sid" => sid])
        } else {
            session.run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales])
        }
        .map_err(err)?;
        let (_, samples) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        let samples = samples.to_vec();
        self.run_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.runs.fetch_add(1, Ordering::Relaxed);
        Ok(samples)
    }

    /// Total wall time spent inside `session.run`, summed over all sessions, in seconds.
    pub fn run_seconds(&self) -> f64 {
        self.run_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }
}

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
        .map_err(|e| runtime_error(e.into()))?;
    builder = match options.provider {
        // Weights re-laid out for the CPU's kernels are shared by the pool; a GPU session runs
        // its own kernels and does without.
        ExecutionProvider::Cpu => builder
            .with_prepacked_weights(prepacked)
            .map_err(|e| runtime_error(e.into()))?,
        ExecutionProvider::Cuda { device_id } => builder
            .with_execution_providers([cuda(device_id)])
            .map_err(|e| cuda_unusable(device_id, e.into()))?,
    };
    builder
        .commit_from_file(model)
        .map_err(|e| match options.provider {
            // The CUDA provider only reaches the device when the session is made, so a missing
            // driver or GPU shows up here rather than at registration.
            ExecutionProvider::Cuda { device_id } if !model_problem(&e) => {
                cuda_unusable(device_id, e)
            }
            _ => runtime_error(e),
        })
}

/// The CUDA provider as Piper sets it up. Every sentence gives the model a new input length,
/// and cuDNN's default exhaustive search would benchmark each convolution again for each new
/// length, costing far more than the faster algorithm it might find saves.
fn cuda(device_id: i32) -> ort::ep::ExecutionProviderDispatch {
    ort::ep::CUDA::default()
        .with_device_id(device_id)
        .with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Heuristic)
        .build()
        .error_on_failure()
}

fn cuda_unusable(device_id: i32, e: ort::Error) -> VoiceError {
    VoiceError::Runtime(format!(
        "CUDA device {device_id} cannot be used: {} (--cuda needs onnxruntime-gpu's \
         libonnxruntime.so in VOXPROOF_ORT_LIB, the CUDA 13 and cuDNN 9 libraries where the \
         dynamic loader finds them, and an NVIDIA GPU with its driver)",
        e.to_string().trim_end()
    ))
}

/// Whether a failed session start was the model file's fault rather than the provider's.
fn model_problem(e: &ort::Error) -> bool {
    matches!(
        e.code(),
        ort::ErrorCode::NoSuchFile
            | ort::ErrorCode::NoModel
            | ort::ErrorCode::InvalidProtobuf
            | ort::ErrorCode::InvalidGraph
    )
}

/// Checks, before any work is taken on, that ONNX Runtime loads and that the provider can run
/// a model: a worker started with `--cuda` on a machine that cannot use the GPU should stop at
/// once with the reason, not fail every segment it is given.
pub fn check_provider(library: &Path, provider: ExecutionProvider) -> Result<(), VoiceError> {
    let env = environment(library)?;
    let ExecutionProvider::Cuda { device_id } = provider else {
        return Ok(());
    };
    let values = run_probe(env, Some(device_id)).map_err(|e| cuda_unusable(device_id, e))?;
    if values != PROBE_OUTPUT {
        return Err(VoiceError::Runtime(format!(
            "CUDA device {device_id} computed Relu({PROBE_INPUT:?}) as {values:?}"
        )));
    }
    Ok(())
}

const PROBE_INPUT: [f32; 2] = [-1.0, 2.0];
const PROBE_OUTPUT: [f32; 2] = [0.0, 2.0];

/// Runs [`probe_model`] on CUDA device `cuda_device`, or on the CPU when there is none.
fn run_probe(env: &Environment, cuda_device: Option<i32>) -> Result<Vec<f32>, ort::Error> {
    let mut builder = Session::builder(env)?;
    if let Some(device_id) = cuda_device {
        builder = builder.with_execution_providers([cuda(device_id)])?;
    }
    let mut session = builder.commit_from_memory(&probe_model())?;
    let input = Tensor::from_array(([PROBE_INPUT.len()], PROBE_INPUT.to_vec()))?;
    let outputs = session.run(ort::inputs!["x" => input])?;
    let (_, values) = outputs[0].try_extract_tensor::<f32>()?;
    Ok(values.to_vec())
}

/// The smallest model that makes the provider start and run a kernel: y = Relu(x), x a float
/// vector of length 2. Written out as ONNX's protobuf encoding (every field here is a small
/// varint or a short length-delimited record, so tags and lengths each fit in one byte).
fn probe_model() -> Vec<u8> {
    fn record(field: u8, body: &[u8]) -> Vec<u8> {
        let length = u8::try_from(body.len()).expect("probe records are short");
        let mut out = vec![(field << 3) | 2, length];
        out.extend_from_slice(body);
        out
    }
    fn number(field: u8, value: u8) -> Vec<u8> {
        vec![field << 3, value]
    }
    // ValueInfoProto { name, type: TypeProto { tensor_type { elem_type: FLOAT, shape [2] } } }
    let tensor = |name: &str| {
        let dimension = record(1, &number(1, 2));
        let tensor_type = [number(1, 1), record(2, &dimension)].concat();
        [
            record(1, name.as_bytes()),
            record(2, &record(1, &tensor_type)),
        ]
        .concat()
    };
    // NodeProto { input: "x", output: "y", op_type: "Relu" }
    let node = [record(1, b"x"), record(2, b"y"), record(4, b"Relu")].concat();
    // GraphProto { node, name, input, output }
    let graph = [
        record(1, &node),
        record(2, b"probe"),
        record(11, &tensor("x")),
        record(12, &tensor("y")),
    ]
    .concat();
    // OperatorSetIdProto { domain: "", version: 13 }
    let opset = [record(1, b""), number(2, 13)].concat();
    // ModelProto { ir_version: 8, graph, opset_import }
    [number(1, 8), record(7, &graph), record(8, &opset)].concat()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written probe must be a model ONNX Runtime accepts; the CPU proves the
    /// encoding, which is the same whichever provider later runs it.
    #[test]
    fn the_probe_model_loads_and_computes_relu() {
        let env = environment(&crate::paths::ort_library()).expect("scripts/setup was run");
        assert_eq!(run_probe(env, None).unwrap(), PROBE_OUTPUT);
        check_provider(&crate::paths::ort_library(), ExecutionProvider::Cpu).unwrap();
    }
}

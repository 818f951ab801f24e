//! The synthesis pipeline: a document's script in, mastered and encoded audio out, with
//! sentence timestamps.
//!
//! Three stages run at once so both cores stay busy: a phonemizer thread (espeak-ng is
//! single-threaded) works ahead, a pool of model sessions renders sentences in parallel,
//! and the calling thread puts results back in order, masters them and streams them into
//! the encoders. A fixed window of items in flight keeps memory flat however long the book
//! is. Every output is written under a temporary name and renamed only when the whole run
//! has succeeded.

pub mod timeline;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use tempfile::NamedTempFile;
use voxproof_audio::{
    AudioEncoder, AudioError, AudioFormat, ChapterMark, Loudness, LoudnessMeter, Master,
    MasteringSettings,
};
use voxproof_text::{Item, Piece, Script};
use voxproof_voice::{
    Espeak, ExecutionProvider, ModelInputs, PoolOptions, Spoken, Voice, VoiceError, VoiceModel,
};
use voxproof_watermark::Embedder;
pub use voxproof_watermark::Payload;

pub use timeline::{Mark, MarkKind, SubtitleFormat};

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    Voice(#[from] VoiceError),
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error("{0}")]
    Settings(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a synthesis thread stopped unexpectedly")]
    Stopped,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How to speak and where to compute.
#[derive(Debug, Clone)]
pub struct SynthSettings {
    /// Speaker name or number, for multi-speaker voices.
    pub speaker: Option<String>,
    /// Speaking rate: 1.0 is the voice's own, 1.25 is a quarter faster.
    pub rate: f32,
    /// Overrides of the voice's own noise scales.
    pub noise_scale: Option<f32>,
    pub noise_w: Option<f32>,
    pub sentence_pause_ms: u32,
    pub paragraph_pause_ms: u32,
    pub chapter_pause_ms: u32,
    /// Room tone at each chapter's start and end (ACX: 0.5–1 s and 1–5 s).
    pub chapter_lead_in_ms: u32,
    pub chapter_tail_ms: u32,
    /// `None` leaves the model's levels untouched.
    pub mastering: Option<MasteringSettings>,
    /// Parallel model sessions and threads inside each.
    pub sessions: usize,
    pub intra_threads: usize,
    pub provider: ExecutionProvider,
    pub ort_library: PathBuf,
    pub espeak_data: PathBuf,
    /// The inaudible mark every output carries; `None` only where a caller marks elsewhere.
    pub watermark: Option<Watermarking>,
}

/// The watermark key and payload for one output.
#[derive(Clone)]
pub struct Watermarking {
    pub key: std::sync::Arc<[u8]>,
    pub payload: Payload,
}

impl std::fmt::Debug for Watermarking {
    /// The payload is public (the manifest names it); the key never appears.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watermarking")
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl Default for SynthSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            speaker: None,
            rate: 1.0,
            noise_scale: None,
            noise_w: None,
            sentence_pause_ms: 250,
            paragraph_pause_ms: 700,
            chapter_pause_ms: 1500,
            chapter_lead_in_ms: 750,
            chapter_tail_ms: 2000,
            mastering: Some(MasteringSettings::default()),
            sessions: cores,
            intra_threads: 1,
            provider: ExecutionProvider::Cpu,
            ort_library: voxproof_voice::paths::ort_library(),
            espeak_data: voxproof_voice::paths::espeak_data(),
            watermark: None,
        }
    }
}

/// Files to produce. Only `audio` is required.
#[derive(Debug, Clone, Default)]
pub struct OutputPaths {
    pub audio: PathBuf,
    pub subtitles: Option<PathBuf>,
    pub marks: Option<PathBuf>,
    /// The normalized text that the marks' byte offsets index.
    pub normalized_text: Option<PathBuf>,
    /// One audio file per chapter, in the main output's format.
    pub chapters_dir: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub sentences: usize,
    pub chapters: usize,
    pub audio_seconds: f64,
    pub wall_seconds: f64,
    /// Wall time spent inside the model (`session.run`), summed over sessions.
    pub model_seconds: f64,
    /// Time the phonemizer thread spent in espeak-ng and id mapping. With the writer's, the
    /// ceiling of the pipeline when the model is fast (a GPU): each stage is one thread.
    pub phonemize_seconds: f64,
    /// Time the writer thread spent mastering, watermarking and encoding.
    pub write_seconds: f64,
    pub sessions: usize,
    pub sample_rate: u32,
    pub unknown_phonemes: usize,
    pub loudness: Loudness,
    pub files: Vec<PathBuf>,
}

/// Receives progress as sentences are written.
pub trait Progress: Sync {
    fn update(&self, sentences_done: usize, sentences_total: usize, audio_seconds: f64);
}

/// Progress that goes nowhere.
#[derive(Debug)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _: usize, _: usize, _: f64) {}
}

/// Items in flight between the phonemizer and the writer.
const WINDOW: usize = 32;

struct Task {
    seq: usize,
    sentences: Vec<Vec<i64>>,
    length_scale: f32,
}

struct Rendered {
    seq: usize,
    pcm: Result<Vec<f32>, SynthError>,
}

/// Checks the outputs before any work: formats known, folders present.
pub fn check_outputs(outputs: &OutputPaths) -> Result<AudioFormat, SynthError> {
    let format = AudioFormat::from_path(&outputs.audio)?;
    voxproof_audio::encode::check_available(format)?;
    if let Some(subtitles) = &outputs.subtitles {
        SubtitleFormat::from_path(subtitles).ok_or_else(|| {
            SynthError::Settings(format!(
                "subtitles must end in .vtt or .srt: {}",
                subtitles.display()
            ))
        })?;
    }
    for path in [
        Some(&outputs.audio),
        outputs.subtitles.as_ref(),
        outputs.marks.as_ref(),
        outputs.normalized_text.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let dir = parent_dir(path);
        if !dir.is_dir() {
            return Err(SynthError::Settings(format!(
                "output folder {} does not exist",
                dir.display()
            )));
        }
    }
    Ok(format)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_beside(path: &Path) -> Result<NamedTempFile, SynthError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent_dir(path);
    // Outputs are ordinary files for the user to share, not private temporaries.
    tempfile::Builder::new()
        .prefix(".voxproof-")
        .suffix(".partial")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(&dir)
        .map_err(io_error(&dir))
}

/// Renders `script` with `voice` into the requested files.
pub fn synthesize(
    voice: &Voice,
    script: &Script,
    settings: &SynthSettings,
    outputs: &OutputPaths,
    progress: &dyn Progress,
) -> Result<Report, SynthError> {
    let started = Instant::now();
    let format = check_outputs(outputs)?;
    if !(0.25..=4.0).contains(&settings.rate) {
        return Err(SynthError::Settings(format!(
            "rate {} is outside 0.25–4.0",
            settings.rate
        )));
    }
    let speaker_id = voice.speaker_id(settings.speaker.as_deref())?;
    let espeak = Espeak::shared(&settings.espeak_data)?;
    let model = load_model(voice, settings)?;
    let inference = voice.config.inference;
    let base_inputs = ModelInputs {
        noise_scale: settings.noise_scale.unwrap_or(inference.noise_scale),
        length_scale: inference.length_scale,
        noise_w: settings.noise_w.unwrap_or(inference.noise_w),
        speaker_id,
    };

    let mut writer = Writer::open(voice.sample_rate(), format, settings, outputs)?;
    let total = script.sentences().count();
    let unknown = AtomicUsize::new(0);
    let phonemize_nanos = AtomicU64::new(0);
    let mut write_time = Duration::ZERO;

    let (token_tx, token_rx) = bounded::<()>(WINDOW);
    for _ in 0..WINDOW {
        let _ = token_tx.send(());
    }
    let (task_tx, task_rx) = bounded::<Task>(WINDOW);
    let (done_tx, done_rx) = bounded::<Rendered>(WINDOW);

    let result = std::thread::scope(|scope| {
        // Phonemizer: works ahead of the model, one item per window token.
        let phonemizer_done = done_tx.clone();
        let unknown = &unknown;
        let phonemize_nanos = &phonemize_nanos;
        scope.spawn(move || {
            for (seq, item) in script.items.iter().enumerate() {
                if token_rx.recv().is_err() {
                    return;
                }
                let task = match item {
                    Item::Sentence(sentence) => {
                        let length_scale = base_inputs.length_scale
                            / (settings.rate * sentence.rate.clamp(0.25, 4.0));
                        let phonemizing = Instant::now();
                        let ids = model_ids(voice, espeak, sentence, unknown);
                        phonemize_nanos
                            .fetch_add(phonemizing.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        match ids {
                            Ok(sentences) => Task {
                                seq,
                                sentences,
                                length_scale,
                            },
                            Err(e) => {
                                let _ = phonemizer_done.send(Rendered {
                                    seq,
                                    pcm: Err(e.into()),
                                });
                                return;
                            }
                        }
                    }
                    _ => Task {
                        seq,
                        sentences: Vec::new(),
                        length_scale: 1.0,
                    },
                };
                if task_tx.send(task).is_err() {
                    return;
                }
            }
        });

        // Model sessions: render sentences in parallel, each on a thread of its own.
        let sessions = model.pool_size();
        for slot in 0..sessions {
            let (tasks, done) = (task_rx.clone(), done_tx.clone());
            let model = &model;
            scope.spawn(move || {
                dedicate_session_thread(slot, sessions);
                for task in tasks {
                    let inputs = ModelInputs {
                        length_scale: task.length_scale,
                        ..base_inputs
                    };
                    let mut pcm = Vec::new();
                    let mut failed = None;
                    for ids in &task.sentences {
                        match model.infer(slot, ids, &inputs) {
                            Ok(samples) => pcm.extend(trim_silence(&samples, voice.sample_rate())),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    let pcm = match failed {
                        Some(e) => Err(e.into()),
                        None => Ok(pcm),
                    };
                    if done.send(Rendered { seq: task.seq, pcm }).is_err() {
                        return;
                    }
                }
            });
        }
        drop(task_rx);
        drop(done_tx);

        // Writer: back in order, mastered, encoded.
        let outcome = write_in_order(
            script,
            &done_rx,
            &token_tx,
            &mut writer,
            &mut write_time,
            total,
            progress,
        );
        drop(done_rx); // unblocks every stage if the writer stopped early
        drop(token_tx);
        outcome
    });
    result?;

    let finishing = Instant::now();
    let Written {
        files,
        loudness,
        audio_seconds,
        chapters,
    } = writer.finish(&script.normalized_text)?;
    write_time += finishing.elapsed();
    Ok(Report {
        sentences: total,
        chapters,
        audio_seconds,
        wall_seconds: started.elapsed().as_secs_f64(),
        model_seconds: model.run_seconds(),
        phonemize_seconds: phonemize_nanos.into_inner() as f64 / 1e9,
        write_seconds: write_time.as_secs_f64(),
        sessions: model.pool_size(),
        sample_rate: voice.sample_rate(),
        unknown_phonemes: unknown.into_inner(),
        loudness,
        files,
    })
}

/// The voice's model with the pool of sessions `settings` asks for.
fn load_model(voice: &Voice, settings: &SynthSettings) -> Result<VoiceModel, SynthError> {
    Ok(VoiceModel::load(
        &voice.model_path,
        &PoolOptions {
            library: settings.ort_library.clone(),
            provider: settings.provider,
            sessions: settings.sessions.max(1),
            intra_threads: settings.intra_threads.max(1),
        },
    )?)
}

/// Model input ids for each of the sentences espeak-ng finds in `sentence` (usually one),
/// counting phonemes the voice does not know into `unknown`.
fn model_ids(
    voice: &Voice,
    espeak: &Espeak,
    sentence: &voxproof_text::Sentence,
    unknown: &AtomicUsize,
) -> Result<Vec<Vec<i64>>, VoiceError> {
    let pieces: Vec<Spoken<'_>> = sentence
        .pieces
        .iter()
        .map(|p| match p {
            Piece::Words(w) => Spoken::Words(w),
            Piece::Phonemes(p) => Spoken::Phonemes(p),
        })
        .collect();
    let phonemes = voice.phonemize(espeak, &pieces)?;
    Ok(phonemes
        .iter()
        .map(|p| {
            let (ids, missing) = voice.ids(p);
            unknown.fetch_add(missing, Ordering::Relaxed);
            ids
        })
        .collect())
}

fn write_in_order(
    script: &Script,
    done: &Receiver<Rendered>,
    tokens: &Sender<()>,
    writer: &mut Writer,
    write_time: &mut Duration,
    total: usize,
    progress: &dyn Progress,
) -> Result<(), SynthError> {
    let mut pending: BTreeMap<usize, Result<Vec<f32>, SynthError>> = BTreeMap::new();
    let mut next = 0;
    let mut sentences_done = 0;
    while next < script.items.len() {
        let Ok(rendered) = done.recv() else {
            return Err(SynthError::Stopped);
        };
        pending.insert(rendered.seq, rendered.pcm);
        while let Some(pcm) = pending.remove(&next) {
            let pcm = pcm?;
            if matches!(script.items[next], Item::Sentence(_)) {
                sentences_done += 1;
            }
            let writing = Instant::now();
            writer.item(&script.items[next], pcm)?;
            *write_time += writing.elapsed();
            let _ = tokens.send(());
            next += 1;
            progress.update(sentences_done, total, writer.seconds());
        }
    }
    Ok(())
}

/// The CPUs this thread may run on.
#[cfg(target_os = "linux")]
fn allowed_cores() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the zeroed set we pass with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

#[cfg(not(target_os = "linux"))]
fn allowed_cores() -> Vec<usize> {
    Vec::new()
}

/// Keeps the calling thread on the `slot`-th allowed CPU. Best effort: a refusal leaves
/// the thread where it is.
fn pin_to_core(slot: usize) {
    #[cfg(target_os = "linux")]
    if let Some(&cpu) = allowed_cores().get(slot) {
        // SAFETY: the set is initialized before use and passed with its size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = slot;
}

/// Whether `sessions` model sessions get a core each. Only when they are exactly as many as
/// the cores this process may use: then each session keeps its core's caches (measured:
/// about 3% faster than letting the scheduler move them). With fewer sessions than cores,
/// other processes on the machine (a second worker, a second `synth`) would pin their
/// sessions to the same first cores and leave the rest idle.
fn pins_sessions(sessions: usize) -> bool {
    sessions == allowed_cores().len()
}

/// Prepares the calling thread to run model session `slot` of `sessions` for the rest of
/// its life: on a core of its own where the sessions fill the machine (see
/// `pins_sessions`). `synthesize` calls it from each session's thread; the platform's
/// workers from each slot's thread.
pub fn dedicate_session_thread(slot: usize, sessions: usize) {
    if pins_sessions(sessions) {
        pin_to_core(slot);
    }
}

/// Cuts the model's leading and trailing near-silence down to a short margin and fades the
/// edges, so the pipeline's own pauses are what the listener hears between sentences.
fn trim_silence(samples: &[f32], sample_rate: u32) -> Vec<f32> {
    let threshold = 10f32.powf(-42.0 / 20.0);
    let margin = sample_rate as usize / 50; // 20 ms
    let first = samples.iter().position(|s| s.abs() > threshold);
    let last = samples.iter().rposition(|s| s.abs() > threshold);
    let (Some(first), Some(last)) = (first, last) else {
        return Vec::new();
    };
    let start = first.saturating_sub(margin);
    let end = (last + margin + 1).min(samples.len());
    let mut out = samples[start..end].to_vec();
    let fade = (sample_rate as usize / 200).min(out.len() / 2); // 5 ms
    for i in 0..fade {
        let g = i as f32 / fade as f32;
        out[i] *= g;
        let j = out.len() - 1 - i;
        out[j] *= g;
    }
    out
}

/// An output being written under a temporary name.
struct PendingFile {
    temp: NamedTempFile,
    target: PathBuf,
}

struct ChapterOutput {
    encoder: Box<dyn AudioEncoder>,
    file: PendingFile,
    /// The chapter's samples in the stream: `[start, end)`; `end` is set when it ends.
    start: u64,
    end: Option<u64>,
}

/// The writer stage: takes items in order with their raw PCM, masters, encodes and times
/// them. `synthesize` drives it from its own model sessions; the platform's assembler drives
/// it from segments rendered elsewhere.
pub struct Writer {
    sample_rate: u32,
    format: AudioFormat,
    settings: SynthSettings,
    outputs: OutputPaths,
    master: Option<Master>,
    meter: LoudnessMeter,
    encoder: Option<Box<dyn AudioEncoder>>,
    audio_file: PendingFile,
    /// Samples taken in; marks and chapters are timed by this count.
    samples_written: u64,
    /// The watermark embedder, whose output lags its input by a few seconds.
    embedder: Option<Embedder>,
    /// Samples handed to the encoders so far (behind `samples_written` by the lag).
    samples_emitted: u64,
    marks: Vec<Mark>,
    chapters: Vec<ChapterMark>,
    /// Chapter files still receiving samples, oldest first: with a watermark lag the
    /// previous chapter's tail is still being emitted when the next chapter begins.
    chapter_outputs: std::collections::VecDeque<ChapterOutput>,
    finished_chapter_files: Vec<PendingFile>,
    /// Pause to put before the next sentence (set by the previous item).
    pause_before_next_ms: Option<u32>,
}

impl Writer {
    pub fn open(
        sample_rate: u32,
        format: AudioFormat,
        settings: &SynthSettings,
        outputs: &OutputPaths,
    ) -> Result<Self, SynthError> {
        if let Some(dir) = &outputs.chapters_dir {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let temp = temp_beside(&outputs.audio)?;
        let encoder = voxproof_audio::encoder(format, temp.path(), sample_rate)?;
        let embedder = match &settings.watermark {
            Some(mark) => Some(
                Embedder::new(&mark.key, sample_rate, mark.payload)
                    .map_err(|e| SynthError::Settings(format!("watermark: {e}")))?,
            ),
            None => None,
        };
        Ok(Self {
            sample_rate,
            format,
            settings: settings.clone(),
            outputs: outputs.clone(),
            master: settings.mastering.map(|m| Master::new(m, sample_rate)),
            meter: LoudnessMeter::new(sample_rate),
            encoder: Some(encoder),
            audio_file: PendingFile {
                temp,
                target: outputs.audio.clone(),
            },
            samples_written: 0,
            embedder,
            samples_emitted: 0,
            marks: Vec::new(),
            chapters: Vec::new(),
            chapter_outputs: std::collections::VecDeque::new(),
            finished_chapter_files: Vec::new(),
            pause_before_next_ms: None,
        })
    }

    pub fn seconds(&self) -> f64 {
        self.samples_written as f64 / f64::from(self.sample_rate)
    }

    fn now_ms(&self) -> u64 {
        self.samples_written * 1000 / u64::from(self.sample_rate)
    }

    fn write(&mut self, samples: &[f32]) -> Result<(), SynthError> {
        if samples.is_empty() {
            return Ok(());
        }
        self.meter.add(samples);
        self.samples_written += samples.len() as u64;
        match self.embedder.as_mut() {
            Some(embedder) => {
                let marked = embedder.process(samples);
                self.emit(&marked)
            }
            None => self.emit(samples),
        }
    }

    /// Hands the next samples of the (marked) stream to the main encoder and to the chapter
    /// files whose ranges they fall in.
    fn emit(&mut self, mut samples: &[f32]) -> Result<(), SynthError> {
        if let Some(encoder) = self.encoder.as_mut() {
            encoder.write(samples)?;
        }
        let mut position = self.samples_emitted;
        self.samples_emitted += samples.len() as u64;
        while !samples.is_empty() {
            let Some(chapter) = self.chapter_outputs.front_mut() else {
                break;
            };
            let len = samples.len() as u64;
            if position < chapter.start {
                // Between chapters (the pause after a chapter's tail): main file only.
                let skip = (chapter.start - position).min(len);
                samples = &samples[skip as usize..];
                position += skip;
                continue;
            }
            let take = chapter
                .end
                .map_or(len, |end| end.saturating_sub(position).min(len));
            chapter.encoder.write(&samples[..take as usize])?;
            samples = &samples[take as usize..];
            position += take;
            self.retire_chapters(position)?;
        }
        self.retire_chapters(self.samples_emitted)
    }

    /// Completes the chapter files that end at or before `position` of the emitted stream.
    fn retire_chapters(&mut self, position: u64) -> Result<(), SynthError> {
        while self
            .chapter_outputs
            .front()
            .and_then(|c| c.end)
            .is_some_and(|end| end <= position)
        {
            if let Some(chapter) = self.chapter_outputs.pop_front() {
                chapter.encoder.finish(&[])?;
                self.finished_chapter_files.push(chapter.file);
            }
        }
        Ok(())
    }

    fn silence(&mut self, ms: u32) -> Result<(), SynthError> {
        let count = (u64::from(ms) * u64::from(self.sample_rate) / 1000) as usize;
        let tone = match self.master.as_mut() {
            Some(master) => master.room_tone(count),
            None => vec![0.0; count],
        };
        self.write(&tone)
    }

    /// Adds the next item; `pcm` is the item's trimmed model output (empty for pauses and
    /// chapter starts).
    pub fn item(&mut self, item: &Item, mut pcm: Vec<f32>) -> Result<(), SynthError> {
        match item {
            Item::Chapter { index, title } => {
                if !self.chapters.is_empty() {
                    self.end_chapter()?;
                    self.silence(self.settings.chapter_pause_ms)?;
                    // Chapters are contiguous: the pause belongs to the chapter it ends.
                    let now = self.now_ms();
                    if let Some(last) = self.chapters.last_mut() {
                        last.end_ms = now;
                    }
                }
                let title = title
                    .clone()
                    .unwrap_or_else(|| format!("Chapter {}", index + 1));
                let start_ms = self.now_ms();
                self.chapters.push(ChapterMark {
                    title: title.clone(),
                    start_ms,
                    end_ms: start_ms,
                });
                let chapter_file_title = title.clone();
                self.marks.push(Mark {
                    time_ms: start_ms,
                    kind: MarkKind::Chapter,
                    start: 0,
                    end: 0,
                    value: title,
                    end_ms: start_ms,
                });
                if let Some(dir) = self.outputs.chapters_dir.clone() {
                    let target = dir.join(format!(
                        "{:03}-{}.{}",
                        index + 1,
                        file_stem(&chapter_file_title),
                        self.format.extension()
                    ));
                    let temp = temp_beside(&target)?;
                    let encoder =
                        voxproof_audio::encoder(self.format, temp.path(), self.sample_rate)?;
                    self.chapter_outputs.push_back(ChapterOutput {
                        encoder,
                        file: PendingFile { temp, target },
                        start: self.samples_written,
                        end: None,
                    });
                }
                self.silence(self.settings.chapter_lead_in_ms)?;
                self.pause_before_next_ms = None;
            }
            Item::Pause { ms } => {
                self.silence(*ms)?;
                self.pause_before_next_ms = None;
            }
            Item::Sentence(sentence) => {
                if let Some(ms) = self.pause_before_next_ms.take() {
                    self.silence(ms)?;
                }
                if let Some(master) = self.master.as_mut() {
                    master.sentence(&mut pcm);
                }
                let start_ms = self.now_ms();
                self.write(&pcm)?;
                let end_ms = self.now_ms();
                if let Some(chapter_mark) = self
                    .marks
                    .iter_mut()
                    .rev()
                    .find(|m| m.kind == MarkKind::Chapter)
                {
                    if chapter_mark.end == 0 && chapter_mark.start == 0 {
                        chapter_mark.start = sentence.span.start;
                        chapter_mark.end = sentence.span.end;
                    }
                }
                self.marks.push(Mark {
                    time_ms: start_ms,
                    kind: MarkKind::Sentence,
                    start: sentence.span.start,
                    end: sentence.span.end,
                    value: sentence.text.clone(),
                    end_ms,
                });
                self.pause_before_next_ms = Some(if sentence.ends_paragraph {
                    self.settings.paragraph_pause_ms
                } else {
                    self.settings.sentence_pause_ms
                });
            }
        }
        Ok(())
    }

    fn end_chapter(&mut self) -> Result<(), SynthError> {
        self.silence(self.settings.chapter_tail_ms)?;
        let end_ms = self.now_ms();
        if let Some(last) = self.chapters.last_mut() {
            last.end_ms = end_ms;
        }
        if let Some(chapter) = self.chapter_outputs.back_mut() {
            if chapter.end.is_none() {
                chapter.end = Some(self.samples_written);
            }
        }
        self.retire_chapters(self.samples_emitted)
    }

    /// Completes every file and moves them to their names.
    pub fn finish(mut self, normalized_text: &str) -> Result<Written, SynthError> {
        self.end_chapter()?;
        if let Some(embedder) = self.embedder.take() {
            let rest = embedder.finish();
            self.emit(&rest)?;
        }
        debug_assert_eq!(self.samples_emitted, self.samples_written);
        debug_assert!(self.chapter_outputs.is_empty());
        if let Some(encoder) = self.encoder.take() {
            encoder.finish(&self.chapters)?;
        }
        let mut pending = vec![self.audio_file];
        pending.append(&mut self.finished_chapter_files);
        if let Some(path) = &self.outputs.subtitles {
            let format = SubtitleFormat::from_path(path).unwrap_or(SubtitleFormat::WebVtt);
            pending.push(text_file(path, &timeline::subtitles(&self.marks, format))?);
        }
        if let Some(path) = &self.outputs.marks {
            let json = serde_json::to_string_pretty(&self.marks)
                .map_err(|e| SynthError::Settings(e.to_string()))?;
            pending.push(text_file(path, &json)?);
        }
        if let Some(path) = &self.outputs.normalized_text {
            pending.push(text_file(path, normalized_text)?);
        }
        let mut files = Vec::new();
        for file in pending {
            file.temp
                .persist(&file.target)
                .map_err(|e| SynthError::Io {
                    path: file.target.clone(),
                    source: e.error,
                })?;
            files.push(file.target);
        }
        let audio_seconds = self.samples_written as f64 / f64::from(self.sample_rate);
        Ok(Written {
            files,
            loudness: self.meter.result(),
            audio_seconds,
            chapters: self.chapters.len(),
        })
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("format", &self.format)
            .field("samples_written", &self.samples_written)
            .finish_non_exhaustive()
    }
}

/// What the writer produced.
#[derive(Debug, Clone)]
pub struct Written {
    /// Every file, at its final name: the audio first, then chapter files and text files.
    pub files: Vec<PathBuf>,
    pub loudness: Loudness,
    pub audio_seconds: f64,
    pub chapters: usize,
}

/// Per-job speaking settings for [`SentenceEngine::prepare`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Speaking {
    pub speaker_id: Option<i64>,
    pub rate: f32,
    pub noise_scale: Option<f32>,
    pub noise_w: Option<f32>,
}

/// One sentence phonemized and ready for the model: the input ids of each sentence
/// espeak-ng found in it (usually one) and the model's settings.
#[derive(Debug, Clone)]
pub struct PreparedSentence {
    ids: Vec<Vec<i64>>,
    inputs: ModelInputs,
}

/// A voice loaded for rendering one sentence at a time on any of its sessions: what the
/// platform's segment workers use, each concurrent task holding one session slot.
pub struct SentenceEngine {
    voice: Voice,
    espeak: &'static Espeak,
    model: VoiceModel,
}

impl std::fmt::Debug for SentenceEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEngine")
            .field("voice", &self.voice.name)
            .field("sessions", &self.model.pool_size())
            .finish()
    }
}

impl SentenceEngine {
    pub fn load(voice: Voice, settings: &SynthSettings) -> Result<Self, SynthError> {
        let espeak = Espeak::shared(&settings.espeak_data)?;
        let model = load_model(&voice, settings)?;
        Ok(Self {
            voice,
            espeak,
            model,
        })
    }

    pub fn voice(&self) -> &Voice {
        &self.voice
    }

    pub fn sessions(&self) -> usize {
        self.model.pool_size()
    }

    /// Seconds spent inside the model so far, summed over sessions.
    pub fn model_seconds(&self) -> f64 {
        self.model.run_seconds()
    }

    /// Phonemizes one sentence for the model. It needs no session, so callers do it before
    /// taking one (as `synthesize` phonemizes ahead of its sessions): espeak-ng's time then
    /// overlaps other sessions' model time instead of leaving a session idle.
    pub fn prepare(
        &self,
        sentence: &voxproof_text::Sentence,
        speaking: &Speaking,
    ) -> Result<PreparedSentence, SynthError> {
        if !(0.25..=4.0).contains(&speaking.rate) {
            return Err(SynthError::Settings(format!(
                "rate {} is outside 0.25–4.0",
                speaking.rate
            )));
        }
        let inference = self.voice.config.inference;
        let inputs = ModelInputs {
            noise_scale: speaking.noise_scale.unwrap_or(inference.noise_scale),
            length_scale: inference.length_scale / (speaking.rate * sentence.rate.clamp(0.25, 4.0)),
            noise_w: speaking.noise_w.unwrap_or(inference.noise_w),
            speaker_id: speaking.speaker_id,
        };
        let unknown = AtomicUsize::new(0);
        let ids = model_ids(&self.voice, self.espeak, sentence, &unknown)?;
        Ok(PreparedSentence { ids, inputs })
    }

    /// The trimmed PCM of each prepared sentence (`None`: an item with no speech, which
    /// renders empty), in order, on session `slot`. Called from the slot's own thread (see
    /// [`dedicate_session_thread`]).
    pub fn render(
        &self,
        slot: usize,
        sentences: &[Option<PreparedSentence>],
    ) -> Result<Vec<Vec<f32>>, SynthError> {
        sentences
            .iter()
            .map(|sentence| {
                let mut pcm = Vec::new();
                if let Some(sentence) = sentence {
                    for ids in &sentence.ids {
                        let samples = self.model.infer(slot, ids, &sentence.inputs)?;
                        pcm.extend(trim_silence(&samples, self.voice.sample_rate()));
                    }
                }
                Ok(pcm)
            })
            .collect()
    }
}

fn text_file(path: &Path, contents: &str) -> Result<PendingFile, SynthError> {
    use std::io::Write;
    let mut temp = temp_beside(path)?;
    temp.write_all(contents.as_bytes())
        .map_err(io_error(path))?;
    Ok(PendingFile {
        temp,
        target: path.to_path_buf(),
    })
}

/// A file-name-safe, short form of a chapter title.
fn file_stem(title: &str) -> String {
    let stem: String = title
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .take(8)
        .collect::<Vec<_>>()
        .join("-");
    if stem.is_empty() {
        "chapter".into()
    } else {
        stem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_session_thread_gets_its_core_only_where_sessions_fill_the_machine() {
        let cores = allowed_cores();
        assert!(!cores.is_empty());
        let last = cores.len() - 1;
        let on_thread = |slot: usize, sessions: usize| {
            std::thread::spawn(move || {
                dedicate_session_thread(slot, sessions);
                allowed_cores()
            })
            .join()
            .unwrap()
        };
        assert_eq!(on_thread(last, cores.len()), vec![cores[last]]);
        assert_eq!(allowed_cores(), cores, "other threads keep their cores");
        assert_eq!(
            on_thread(0, cores.len() + 1),
            cores,
            "more sessions than cores share them"
        );
        assert!(pins_sessions(cores.len()));
        assert!(
            !pins_sessions(cores.len() + 1),
            "more sessions than cores share them"
        );
        if cores.len() > 1 {
            assert!(
                !pins_sessions(1),
                "a session that leaves cores free is not pinned"
            );
        }
    }

    #[test]
    fn trimming_keeps_a_margin_and_fades() {
        let mut samples = vec![0.0f32; 22050];
        for s in &mut samples[10_000..12_000] {
            *s = 0.5;
        }
        let out = trim_silence(&samples, 22050);
        assert_eq!(out.len(), 2000 + 2 * 441);
        assert_eq!(out[0], 0.0);
        assert!(out[600] > 0.4);
        assert!(trim_silence(&[0.0; 100], 22050).is_empty());
    }

    #[test]
    fn chapter_file_names() {
        assert_eq!(
            file_stem("Chapter IV: The Return!"),
            "chapter-iv-the-return"
        );
        assert_eq!(file_stem("???"), "chapter");
    }
}

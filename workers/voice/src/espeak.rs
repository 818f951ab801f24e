//! espeak-ng 1.52 phonemization, the way Piper voices were trained.
//!
//! Piper phonemizes clause by clause and keeps each clause's closing punctuation (`,` `:` `;`
//! followed by a space, or `.` `?` `!` which also end the sentence). espeak-ng 1.52's public
//! API has no call that reports the punctuation that closed a clause, but its
//! `TranslateClauseWithTerminator` does exactly that; the library is linked statically
//! (pinned `espeak-rs-sys` 0.2.0), so [`next_clause`] reproduces `espeak_TextToPhonemes` with
//! that function in place of `TranslateClause`.
//!
//! libespeak-ng keeps global state and is not thread-safe: every call goes through one mutex.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use unicode_normalization::UnicodeNormalization;

// The crate carries no code we call: it builds and links espeak-ng 1.52 (static library).
use espeak_rs_sys as _;

use crate::VoiceError;

// Values of espeak-ng 1.52 (speak_lib.h, translate.h).
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const ESPEAK_INITIALIZE_DONT_EXIT: c_int = 0x8000;
const ESPEAK_CHARS_UTF8: c_int = 1;
const ESPEAK_PHONEMES_IPA: c_int = 0x02;
const CLAUSE_INTONATION_TYPE_AND_PAUSE: c_int = 0x000F_FFFF;
const CLAUSE_TYPE_SENTENCE: c_int = 0x0008_0000;
const CLAUSE_PERIOD: c_int = 40 | CLAUSE_TYPE_SENTENCE;
const CLAUSE_COMMA: c_int = 20 | 0x1000 | 0x0004_0000;
const CLAUSE_QUESTION: c_int = 40 | 0x2000 | CLAUSE_TYPE_SENTENCE;
const CLAUSE_EXCLAMATION: c_int = 45 | 0x3000 | CLAUSE_TYPE_SENTENCE;
const CLAUSE_COLON: c_int = 30 | 0x0004_0000;
const CLAUSE_SEMICOLON: c_int = 30 | 0x1000 | 0x0004_0000;

#[allow(non_upper_case_globals)]
unsafe extern "C" {
    fn espeak_Initialize(
        output: c_int,
        buflength: c_int,
        path: *const c_char,
        options: c_int,
    ) -> c_int;
    fn espeak_SetVoiceByName(name: *const c_char) -> c_int;

    // Internals of libespeak-ng 1.52 (translate.h, readclause.c, encoding.h, dictionary.h).
    static mut translator: *mut c_void;
    static mut p_decoder: *mut c_void;
    fn create_text_decoder() -> *mut c_void;
    fn text_decoder_decode_string_multibyte(
        decoder: *mut c_void,
        input: *const c_void,
        encoding: c_int,
        flags: c_int,
    ) -> c_int;
    fn text_decoder_get_buffer(decoder: *mut c_void) -> *const c_void;
    fn TranslateClauseWithTerminator(
        tr: *mut c_void,
        tone_out: *mut c_int,
        voice_change: *mut *mut c_char,
        terminator_out: *mut c_int,
    );
    fn GetTranslatedPhonemeString(phoneme_mode: c_int) -> *const c_char;
}

/// One clause as espeak-ng read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// IPA phonemes, language-switch flags removed.
    pub phonemes: String,
    /// Punctuation Piper keeps after the clause ("" when none).
    pub terminator: &'static str,
    pub ends_sentence: bool,
}

/// Handle to the process-wide espeak-ng instance.
#[derive(Debug)]
pub struct Espeak {
    state: Mutex<EspeakState>,
    data_dir: PathBuf,
}

#[derive(Debug)]
struct EspeakState {
    current_voice: Option<String>,
}

static INSTANCE: OnceLock<Result<Espeak, String>> = OnceLock::new();

impl Espeak {
    /// The shared instance, initialized from `data_dir` (the folder that holds
    /// `espeak-ng-data`'s files such as `phondata` and `en_dict`) on first use. Later calls
    /// must name the same folder.
    pub fn shared(data_dir: &Path) -> Result<&'static Espeak, VoiceError> {
        let instance = INSTANCE.get_or_init(|| Espeak::initialize(data_dir));
        match instance {
            Ok(espeak) if espeak.data_dir == data_dir => Ok(espeak),
            Ok(espeak) => Err(VoiceError::Espeak(format!(
                "espeak-ng is already initialized from {}, not {}",
                espeak.data_dir.display(),
                data_dir.display()
            ))),
            Err(message) => Err(VoiceError::Espeak(message.clone())),
        }
    }

    fn initialize(data_dir: &Path) -> Result<Espeak, String> {
        if !data_dir.join("phondata").is_file() {
            return Err(format!(
                "no espeak-ng data at {} (missing phondata); run scripts/setup or set VOXPROOF_ESPEAK_DATA",
                data_dir.display()
            ));
        }
        // espeak_Initialize wants the folder *containing* espeak-ng-data unless the path
        // itself ends in it; passing the data folder works for both layouts in 1.52.
        let path = CString::new(data_dir.to_string_lossy().as_bytes())
            .map_err(|_| "espeak-ng data path contains a NUL byte".to_string())?;
        // SAFETY: called once (OnceLock), before any other espeak-ng call; the path outlives it.
        let rate = unsafe {
            espeak_Initialize(
                AUDIO_OUTPUT_SYNCHRONOUS,
                0,
                path.as_ptr(),
                ESPEAK_INITIALIZE_DONT_EXIT,
            )
        };
        if rate <= 0 {
            return Err(format!(
                "espeak-ng failed to initialize from {} (code {rate})",
                data_dir.display()
            ));
        }
        Ok(Espeak {
            state: Mutex::new(EspeakState {
                current_voice: None,
            }),
            data_dir: data_dir.to_path_buf(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, EspeakState> {
        // A panic while holding the lock leaves espeak's own state consistent between calls.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Phonemizes `text` with espeak voice `voice` into clauses.
    pub fn clauses(&self, voice: &str, text: &str) -> Result<Vec<Clause>, VoiceError> {
        let mut state = self.lock();
        if state.current_voice.as_deref() != Some(voice) {
            let name = CString::new(voice)
                .map_err(|_| VoiceError::Espeak("espeak voice name contains a NUL byte".into()))?;
            // SAFETY: espeak is initialized; the lock serializes access to its globals.
            let status = unsafe { espeak_SetVoiceByName(name.as_ptr()) };
            if status != 0 {
                return Err(VoiceError::Espeak(format!(
                    "espeak-ng has no voice {voice:?} (error {status})"
                )));
            }
            state.current_voice = Some(voice.to_string());
        }
        // NUL would end the C string early; nothing readable is lost by dropping it.
        let text = CString::new(text.replace('\0', " "))
            .map_err(|_| VoiceError::Espeak("text contains a NUL byte".into()))?;
        let mut cursor: *const c_void = text.as_ptr().cast();
        let mut clauses = Vec::new();
        while !cursor.is_null() {
            // SAFETY: the lock is held; `text` lives until the loop ends and espeak only
            // advances `cursor` within it (or sets it to null at the end).
            let clause = unsafe { next_clause(&mut cursor)? };
            clauses.push(clause);
        }
        drop(state);
        Ok(clauses)
    }
}

/// `espeak_TextToPhonemes` with the clause terminator reported.
///
/// # Safety
/// espeak-ng must be initialized and its mutex held; `cursor` must point into a live
/// NUL-terminated UTF-8 string.
unsafe fn next_clause(cursor: &mut *const c_void) -> Result<Clause, VoiceError> {
    // SAFETY: guaranteed by the caller; these are the steps of espeak_TextToPhonemes.
    unsafe {
        if p_decoder.is_null() {
            p_decoder = create_text_decoder();
        }
        let status = text_decoder_decode_string_multibyte(p_decoder, *cursor, 0, ESPEAK_CHARS_UTF8);
        if status != 0 {
            return Err(VoiceError::Espeak(format!(
                "espeak-ng could not decode text (status {status:#x})"
            )));
        }
        let mut terminator: c_int = 0;
        TranslateClauseWithTerminator(
            translator,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut terminator,
        );
        *cursor = text_decoder_get_buffer(p_decoder);
        let raw = GetTranslatedPhonemeString(ESPEAK_PHONEMES_IPA);
        let phonemes = if raw.is_null() {
            String::new()
        } else {
            strip_language_flags(&CStr::from_ptr(raw).to_string_lossy())
        };
        Ok(Clause {
            phonemes,
            terminator: terminator_text(terminator),
            ends_sentence: terminator & CLAUSE_TYPE_SENTENCE == CLAUSE_TYPE_SENTENCE,
        })
    }
}

fn terminator_text(terminator: c_int) -> &'static str {
    match terminator & CLAUSE_INTONATION_TYPE_AND_PAUSE {
        CLAUSE_PERIOD => ".",
        CLAUSE_QUESTION => "?",
        CLAUSE_EXCLAMATION => "!",
        CLAUSE_COMMA => ", ",
        CLAUSE_COLON => ": ",
        CLAUSE_SEMICOLON => "; ",
        _ => "",
    }
}

/// Removes `(en)`-style language switch flags espeak puts around foreign words.
fn strip_language_flags(phonemes: &str) -> String {
    let mut out = String::with_capacity(phonemes.len());
    let mut chars = phonemes.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '(' {
            let rest: String = chars.clone().take_while(|&c| c != ')').collect();
            if !rest.is_empty() && chars.clone().nth(rest.chars().count()) == Some(')') {
                for _ in 0..=rest.chars().count() {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Sentences of phonemes as Piper builds them: clause phonemes plus kept punctuation,
/// decomposed (NFD) into code points, then known vowel clusters merged.
pub fn sentences_from_clauses(
    clauses: &[Clause],
    vowel_clusters: &[Vec<String>],
) -> Vec<Vec<String>> {
    let mut sentences = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for clause in clauses {
        let joined = format!("{}{}", clause.phonemes, clause.terminator);
        current.extend(joined.nfd().map(String::from));
        if clause.ends_sentence {
            sentences.push(merge_vowel_clusters(
                std::mem::take(&mut current),
                vowel_clusters,
            ));
        }
    }
    if !current.is_empty() {
        sentences.push(merge_vowel_clusters(current, vowel_clusters));
    }
    sentences
}

fn merge_vowel_clusters(phonemes: Vec<String>, clusters: &[Vec<String>]) -> Vec<String> {
    if clusters.is_empty() {
        return phonemes;
    }
    let longest = clusters.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(phonemes.len());
    let mut i = 0;
    while i < phonemes.len() {
        let matched = (2..=longest.min(phonemes.len() - i))
            .rev()
            .find(|&n| clusters.iter().any(|c| c.as_slice() == &phonemes[i..i + n]));
        match matched {
            Some(n) => {
                out.push(phonemes[i..i + n].concat());
                i += n;
            }
            None => {
                out.push(phonemes[i].clone());
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_flags_are_removed() {
        assert_eq!(
            strip_language_flags("həlˈoʊ (fr)bɔ̃ʒˈuʁ(en) wˈɜːld"),
            "həlˈoʊ bɔ̃ʒˈuʁ wˈɜːld"
        );
        assert_eq!(strip_language_flags("a(b"), "a(b");
    }

    #[test]
    fn clauses_group_into_sentences_with_kept_punctuation() {
        let clauses = vec![
            Clause {
                phonemes: "hˈaɪ".into(),
                terminator: ", ",
                ends_sentence: false,
            },
            Clause {
                phonemes: "ðˈɛɹ".into(),
                terminator: ".",
                ends_sentence: true,
            },
            Clause {
                phonemes: "ˈoʊ".into(),
                terminator: "",
                ends_sentence: false,
            },
        ];
        let clusters = vec![vec!["a".to_string(), "ɪ".to_string()]];
        let sentences = sentences_from_clauses(&clauses, &clusters);
        assert_eq!(sentences.len(), 2);
        assert_eq!(
            sentences[0],
            ["h", "ˈ", "aɪ", ",", " ", "ð", "ˈ", "ɛ", "ɹ", "."]
        );
        assert_eq!(sentences[1], ["ˈ", "o", "ʊ"]);
    }
}

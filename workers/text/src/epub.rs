//! EPUB 2 and 3: chapters in spine order, titled from the EPUB 3 navigation document or the
//! EPUB 2 NCX; XHTML read as paragraphs; footnotes, note references, scripts and styles
//! skipped. Reads only from the archive (no network), refuses entity declarations
//! (no external entities), and caps decompressed sizes against zip bombs.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::document::{Chapter, Document, Paragraph};
use crate::TextError;

/// Largest decompressed size of one file in the archive.
const MAX_ENTRY_BYTES: u64 = 32 << 20;
/// Largest decompressed size of everything read from the archive.
const MAX_TOTAL_BYTES: u64 = 256 << 20;
const MAX_ENTRIES: usize = 20_000;

struct Archive {
    zip: zip::ZipArchive<Cursor<Vec<u8>>>,
    read_so_far: u64,
}

fn error(path: &str, message: impl Into<String>) -> TextError {
    TextError::Epub {
        path: path.to_string(),
        message: message.into(),
    }
}

impl Archive {
    fn read(&mut self, path: &str) -> Result<String, TextError> {
        let mut file = self
            .zip
            .by_name(path)
            .map_err(|e| error(path, format!("cannot open: {e}")))?;
        let mut bytes = Vec::new();
        (&mut file)
            .take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| error(path, format!("cannot decompress: {e}")))?;
        if bytes.len() as u64 > MAX_ENTRY_BYTES {
            return Err(error(
                path,
                format!(
                    "larger than {} MiB when decompressed",
                    MAX_ENTRY_BYTES >> 20
                ),
            ));
        }
        self.read_so_far += bytes.len() as u64;
        if self.read_so_far > MAX_TOTAL_BYTES {
            return Err(error(
                path,
                format!(
                    "the book is larger than {} MiB when decompressed",
                    MAX_TOTAL_BYTES >> 20
                ),
            ));
        }
        let text = String::from_utf8(bytes).map_err(|_| error(path, "not valid UTF-8"))?;
        // Entity declarations are how XML reaches outside a document (and how entity
        // bombs grow); no book needs them. A plain DOCTYPE, common in EPUB 2, is fine.
        if text.contains("<!ENTITY") {
            return Err(error(
                path,
                "DOCTYPE declarations with entities are not allowed",
            ));
        }
        Ok(text)
    }
}

pub fn parse(bytes: &[u8]) -> Result<Document, TextError> {
    let zip = zip::ZipArchive::new(Cursor::new(bytes.to_vec()))
        .map_err(|e| error("(archive)", format!("not a valid EPUB (zip) file: {e}")))?;
    if zip.len() > MAX_ENTRIES {
        return Err(error("(archive)", format!("more than {MAX_ENTRIES} files")));
    }
    let mut archive = Archive {
        zip,
        read_so_far: 0,
    };

    let container_path = "META-INF/container.xml";
    let container = archive.read(container_path)?;
    let opf_path = first_attribute(&container, container_path, b"rootfile", "full-path")?
        .ok_or_else(|| error(container_path, "no <rootfile full-path> element"))?;
    let opf = archive.read(&opf_path)?;
    let package = Package::parse(&opf, &opf_path)?;

    let titles = match (&package.nav, &package.ncx) {
        (Some(nav), _) => {
            let text = archive.read(nav)?;
            toc_titles(&text, nav, TocKind::Nav)?
        }
        (None, Some(ncx)) => {
            let text = archive.read(ncx)?;
            toc_titles(&text, ncx, TocKind::Ncx)?
        }
        (None, None) => HashMap::new(),
    };

    let mut document = Document::default();
    for path in &package.spine {
        let xhtml = archive.read(path)?;
        let paragraphs = xhtml_paragraphs(&xhtml, path)?;
        match titles.get(path.as_str()) {
            Some(title) => document.chapters.push(Chapter {
                title: Some(title.clone()),
                paragraphs,
            }),
            None => match document.chapters.last_mut() {
                // Unlisted spine files continue the chapter before them (books split long
                // chapters across files).
                Some(chapter) => chapter.paragraphs.extend(paragraphs),
                None => document.chapters.push(Chapter {
                    title: None,
                    paragraphs,
                }),
            },
        }
    }
    Ok(document.tidy())
}

fn xml_reader(text: &str) -> Reader<&[u8]> {
    let mut reader = Reader::from_reader(text.as_bytes());
    reader.config_mut().check_end_names = false;
    reader
}

/// The named attribute of the first `element` in a small XML file.
fn first_attribute(
    text: &str,
    path: &str,
    element: &[u8],
    attribute: &str,
) -> Result<Option<String>, TextError> {
    let mut reader = xml_reader(text);
    loop {
        match reader
            .read_event()
            .map_err(|e| error(path, e.to_string()))?
        {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == element => {
                return attr(&e, attribute, path);
            }
            Event::Eof => return Ok(None),
            _ => {}
        }
    }
}

fn attr(e: &BytesStart<'_>, name: &str, path: &str) -> Result<Option<String>, TextError> {
    for a in e.attributes() {
        let a = a.map_err(|err| error(path, err.to_string()))?;
        let key = a.key.as_ref();
        let local = key.rsplit(|&b| b == b':').next().unwrap_or(key);
        if key == name.as_bytes() || local == name.as_bytes() {
            return Ok(Some(String::from_utf8_lossy(&a.value).into_owned()));
        }
    }
    Ok(None)
}

/// Resolves `href` relative to the file at `base`, dropping any fragment.
fn resolve(base: &str, href: &str) -> String {
    let href = href.split('#').next().unwrap_or("");
    let href = percent_decode(href);
    let mut parts: Vec<&str> = base
        .rsplit_once('/')
        .map_or(Vec::new(), |(dir, _)| dir.split('/').collect());
    for segment in href.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Package {
    spine: Vec<String>,
    nav: Option<String>,
    ncx: Option<String>,
}

impl Package {
    fn parse(opf: &str, path: &str) -> Result<Self, TextError> {
        let mut reader = xml_reader(opf);
        let mut manifest: HashMap<String, (String, String, String)> = HashMap::new(); // id → (href, type, properties)
        let mut spine_ids = Vec::new();
        let mut toc_id = None;
        loop {
            match reader
                .read_event()
                .map_err(|e| error(path, e.to_string()))?
            {
                Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                    b"item" => {
                        let id = attr(&e, "id", path)?.unwrap_or_default();
                        let href = attr(&e, "href", path)?
                            .ok_or_else(|| error(path, "manifest item without href"))?;
                        let media = attr(&e, "media-type", path)?.unwrap_or_default();
                        let properties = attr(&e, "properties", path)?.unwrap_or_default();
                        manifest.insert(id, (resolve(path, &href), media, properties));
                    }
                    b"spine" => toc_id = attr(&e, "toc", path)?,
                    b"itemref" => {
                        let linear = attr(&e, "linear", path)?.is_none_or(|l| l != "no");
                        if let (Some(idref), true) = (attr(&e, "idref", path)?, linear) {
                            spine_ids.push(idref);
                        }
                    }
                    _ => {}
                },
                Event::Eof => break,
                _ => {}
            }
        }
        let mut spine = Vec::new();
        for id in spine_ids {
            let (href, media, _) = manifest
                .get(&id)
                .ok_or_else(|| error(path, format!("spine names unknown item {id:?}")))?;
            if media.contains("html") {
                spine.push(href.clone());
            }
        }
        if spine.is_empty() {
            return Err(error(path, "the spine lists no XHTML documents"));
        }
        let nav = manifest
            .values()
            .find(|(_, _, p)| p.split_whitespace().any(|p| p == "nav"))
            .map(|(h, _, _)| h.clone());
        let ncx = toc_id
            .and_then(|id| manifest.get(&id).map(|(h, _, _)| h.clone()))
            .or_else(|| {
                manifest
                    .values()
                    .find(|(_, m, _)| m == "application/x-dtbncx+xml")
                    .map(|(h, _, _)| h.clone())
            });
        Ok(Package { spine, nav, ncx })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum TocKind {
    Nav,
    Ncx,
}

/// File path → chapter title, first entry per file, in document order.
fn toc_titles(text: &str, path: &str, kind: TocKind) -> Result<HashMap<String, String>, TextError> {
    let mut reader = xml_reader(text);
    let mut titles = HashMap::new();
    let mut in_toc_nav = kind == TocKind::Ncx;
    let mut nav_depth = 0usize;
    let mut label = String::new();
    let mut in_label = false;
    let mut pending_href: Option<String> = None;
    loop {
        match reader
            .read_event()
            .map_err(|e| error(path, e.to_string()))?
        {
            Event::Start(e) => match e.local_name().as_ref() {
                b"nav" if kind == TocKind::Nav => {
                    nav_depth += 1;
                    if attr(&e, "type", path)?
                        .is_some_and(|t| t.split_whitespace().any(|t| t == "toc"))
                    {
                        in_toc_nav = true;
                    }
                }
                b"a" if in_toc_nav && kind == TocKind::Nav => {
                    pending_href = attr(&e, "href", path)?;
                    label.clear();
                    in_label = true;
                }
                b"navLabel" if kind == TocKind::Ncx => {
                    label.clear();
                    in_label = true;
                }
                _ => {}
            },
            Event::Empty(e) if kind == TocKind::Ncx && e.local_name().as_ref() == b"content" => {
                if let Some(src) = attr(&e, "src", path)? {
                    let title = label.split_whitespace().collect::<Vec<_>>().join(" ");
                    titles.entry(resolve(path, &src)).or_insert(title);
                }
            }
            Event::Text(t) if in_label => {
                label.push_str(&unescape_html(&String::from_utf8_lossy(&t)))
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"a" if kind == TocKind::Nav && in_label => {
                    in_label = false;
                    if let Some(href) = pending_href.take() {
                        let title = label.split_whitespace().collect::<Vec<_>>().join(" ");
                        titles.entry(resolve(path, &href)).or_insert(title);
                    }
                }
                b"navLabel" => in_label = false,
                b"nav" if kind == TocKind::Nav => {
                    nav_depth = nav_depth.saturating_sub(1);
                    if nav_depth == 0 {
                        in_toc_nav = false;
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(titles)
}

const BLOCKS: &[&[u8]] = &[
    b"p",
    b"div",
    b"h1",
    b"h2",
    b"h3",
    b"h4",
    b"h5",
    b"h6",
    b"li",
    b"blockquote",
    b"dt",
    b"dd",
    b"tr",
    b"br",
    b"section",
    b"article",
    b"pre",
    b"figcaption",
    b"caption",
];
const SKIPPED: &[&[u8]] = &[
    b"head", b"script", b"style", b"aside", b"nav", b"svg", b"math", b"rt", b"rp",
];

/// Paragraphs of one XHTML document.
fn xhtml_paragraphs(text: &str, path: &str) -> Result<Vec<Paragraph>, TextError> {
    let mut reader = xml_reader(text);
    let mut paragraphs = Vec::new();
    let mut current = String::new();
    let mut skip_depth = 0usize;
    let flush = |current: &mut String, paragraphs: &mut Vec<Paragraph>| {
        let text = current.split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty() {
            paragraphs.push(Paragraph::text(text));
        }
        current.clear();
    };
    loop {
        match reader
            .read_event()
            .map_err(|e| error(path, e.to_string()))?
        {
            Event::Start(e) => {
                let name = e.local_name();
                if skip_depth > 0 || SKIPPED.contains(&name.as_ref()) || is_note(&e, path)? {
                    skip_depth += 1;
                } else if BLOCKS.contains(&name.as_ref()) {
                    flush(&mut current, &mut paragraphs);
                }
            }
            Event::Empty(e) if skip_depth == 0 && BLOCKS.contains(&e.local_name().as_ref()) => {
                current.push(' ')
            }
            Event::End(e) => {
                if skip_depth > 0 {
                    skip_depth -= 1;
                } else if BLOCKS.contains(&e.local_name().as_ref()) {
                    flush(&mut current, &mut paragraphs);
                }
            }
            Event::Text(t) if skip_depth == 0 => {
                current.push_str(&unescape_html(&String::from_utf8_lossy(&t)))
            }
            Event::CData(t) if skip_depth == 0 => current.push_str(&String::from_utf8_lossy(&t)),
            Event::Eof => break,
            _ => {}
        }
    }
    flush(&mut current, &mut paragraphs);
    Ok(paragraphs)
}

/// Footnotes, endnotes, note references and page-break markers are not read aloud.
fn is_note(e: &BytesStart<'_>, path: &str) -> Result<bool, TextError> {
    let types = [attr(e, "type", path)?, attr(e, "role", path)?];
    Ok(types.iter().flatten().any(|t| {
        t.split_whitespace().any(|t| {
            matches!(
                t.trim_start_matches("doc-"),
                "footnote"
                    | "footnotes"
                    | "endnote"
                    | "endnotes"
                    | "rearnote"
                    | "rearnotes"
                    | "noteref"
                    | "pagebreak"
            )
        })
    }))
}

/// XML's five entities, numeric references, and the HTML entities books commonly use.
fn unescape_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let resolved = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "rsquo" | "lsquo" => Some('\''),
            "nbsp" | "ensp" | "emsp" | "thinsp" => Some(' '),
            "mdash" | "ndash" => Some('—'),
            "hellip" => Some('…'),
            "ldquo" | "rdquo" => Some('"'),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match resolved {
            Some(c) => out.push(c),
            None => out.push_str(&rest[..=end]),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Builds an EPUB in memory from (path, contents).
    pub(crate) fn epub(files: &[(&str, &str)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("mimetype", stored).unwrap();
        zip.write_all(b"application/epub+zip").unwrap();
        let deflated = zip::write::SimpleFileOptions::default();
        for (path, contents) in files {
            zip.start_file(*path, deflated).unwrap();
            zip.write_all(contents.as_bytes()).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    const CONTAINER: &str = r#"<?xml version="1.0"?><container xmlns="urn:oasis:names:tc:opendocument:xmlns:container" version="1.0"><rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"#;

    pub(crate) fn sample_epub3() -> Vec<u8> {
        epub(&[
            ("META-INF/container.xml", CONTAINER),
            (
                "OEBPS/content.opf",
                r#"<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0"><manifest>
<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
<item id="c1" href="text/one.xhtml" media-type="application/xhtml+xml"/>
<item id="c1b" href="text/one-b.xhtml" media-type="application/xhtml+xml"/>
<item id="c2" href="text/two.xhtml" media-type="application/xhtml+xml"/>
<item id="css" href="style.css" media-type="text/css"/>
</manifest><spine><itemref idref="c1"/><itemref idref="c1b"/><itemref idref="c2"/></spine></package>"#,
            ),
            (
                "OEBPS/nav.xhtml",
                r#"<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops"><body>
<nav epub:type="toc"><ol><li><a href="text/one.xhtml">The Harbor</a></li><li><a href="text/two.xhtml#start">The Storm</a></li></ol></nav>
<nav epub:type="landmarks"><ol><li><a href="text/two.xhtml">Ignored</a></li></ol></nav></body></html>"#,
            ),
            (
                "OEBPS/text/one.xhtml",
                r##"<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops"><head><title>x</title><style>p{}</style></head><body>
<h1>The Harbor</h1><p>The ship came in&nbsp;at dawn.<a epub:type="noteref" href="#n1">1</a></p>
<aside epub:type="footnote" id="n1"><p>A footnote that must not be read.</p></aside></body></html>"##,
            ),
            (
                "OEBPS/text/one-b.xhtml",
                r#"<html xmlns="http://www.w3.org/1999/xhtml"><body><p>It was a quiet morning.</p></body></html>"#,
            ),
            (
                "OEBPS/text/two.xhtml",
                r#"<html xmlns="http://www.w3.org/1999/xhtml"><body><h2 id="start">The Storm</h2><p>By noon &#8220;the wind&#8221; had turned.</p></body></html>"#,
            ),
        ])
    }

    #[test]
    fn epub3_chapters_follow_the_spine_and_nav() {
        let doc = parse(&sample_epub3()).unwrap();
        let titles: Vec<Option<&str>> = doc.chapters.iter().map(|c| c.title.as_deref()).collect();
        assert_eq!(titles, [Some("The Harbor"), Some("The Storm")]);
        assert_eq!(
            doc.chapters[0].paragraphs,
            [
                Paragraph::text("The Harbor"),
                Paragraph::text("The ship came in at dawn."),
                Paragraph::text("It was a quiet morning.")
            ]
        );
        assert_eq!(
            doc.chapters[1].paragraphs[1],
            Paragraph::text("By noon \u{201C}the wind\u{201D} had turned.")
        );
    }

    #[test]
    fn epub2_titles_come_from_the_ncx() {
        let book = epub(&[
            ("META-INF/container.xml", CONTAINER),
            (
                "OEBPS/content.opf",
                r#"<package xmlns="http://www.idpf.org/2007/opf" version="2.0"><manifest>
<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>
<item id="a" href="a.html" media-type="application/xhtml+xml"/></manifest><spine toc="ncx"><itemref idref="a"/></spine></package>"#,
            ),
            (
                "OEBPS/toc.ncx",
                r#"<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/"><navMap><navPoint id="p1"><navLabel><text>Only Chapter</text></navLabel><content src="a.html"/></navPoint></navMap></ncx>"#,
            ),
            ("OEBPS/a.html", "<html><body><p>Words.</p></body></html>"),
        ]);
        let doc = parse(&book).unwrap();
        assert_eq!(doc.chapters[0].title.as_deref(), Some("Only Chapter"));
    }

    #[test]
    fn broken_books_name_the_failing_path() {
        let not_zip = parse(b"plain text, not a zip").unwrap_err();
        assert!(
            not_zip
                .to_string()
                .starts_with("EPUB error in (archive): not a valid EPUB"),
            "{not_zip}"
        );
        let no_container = parse(&epub(&[("x.txt", "x")])).unwrap_err();
        assert!(
            no_container.to_string().contains("META-INF/container.xml"),
            "{no_container}"
        );
        let missing_chapter = epub(&[
            ("META-INF/container.xml", CONTAINER),
            (
                "OEBPS/content.opf",
                r#"<package><manifest><item id="a" href="gone.xhtml" media-type="application/xhtml+xml"/></manifest><spine><itemref idref="a"/></spine></package>"#,
            ),
        ]);
        assert!(parse(&missing_chapter)
            .unwrap_err()
            .to_string()
            .contains("OEBPS/gone.xhtml"));
        let entity = epub(&[
            ("META-INF/container.xml", CONTAINER),
            (
                "OEBPS/content.opf",
                r#"<!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/passwd">]><package><manifest/><spine/></package>"#,
            ),
        ]);
        assert!(parse(&entity).unwrap_err().to_string().contains("DOCTYPE"));
    }

    #[test]
    fn zip_bombs_are_refused() {
        let big = "a".repeat((MAX_ENTRY_BYTES + 10) as usize);
        let book = epub(&[("META-INF/container.xml", &big)]);
        assert!(book.len() < 1 << 20, "deflate keeps the fixture small");
        assert!(parse(&book)
            .unwrap_err()
            .to_string()
            .contains("larger than 32 MiB"));
    }
}

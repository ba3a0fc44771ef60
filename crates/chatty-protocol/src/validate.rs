//! Parsing newtypes: untrusted strings in, trusted values out.
//!
//! "Parse, don't validate": each type here has a private field and a `parse`
//! constructor, so holding a [`Nickname`] or a [`MessageBody`] is proof that
//! the rules below were applied. The server parses at the handler edge and
//! the rest of the code never re-checks.
//!
//! ## Text rules (nicknames and message bodies)
//!
//! Applied in this order, so that what is counted is what is stored:
//!
//! 1. Unicode NFC normalisation (`e` + U+0301 becomes `é`, one character).
//! 2. Invisible characters that carry no meaning in chat are **stripped**:
//!    U+200B zero-width space, U+2060 word joiner, U+FEFF byte-order mark,
//!    U+180E Mongolian vowel separator, U+00AD soft hyphen.
//! 3. In bodies, `\r\n` and a lone `\r` become `\n`.
//! 4. **Rejected**: control characters (Unicode `Cc`; a body may keep `\n`
//!    and `\t`), bidi controls (U+061C, U+200E, U+200F, U+202A–U+202E,
//!    U+2066–U+2069: they let a name like `moc.evil` render as `live.com`),
//!    line/paragraph separators U+2028/U+2029, noncharacters U+FFFE/U+FFFF,
//!    a zero-width joiner or non-joiner (U+200C, U+200D) that starts or ends
//!    the text or stands next to another one (a "zero-width run"; a single
//!    joiner between two visible characters is kept, emoji sequences need
//!    it), and more than [`MAX_COMBINING_RUN`] combining marks on one base
//!    character ("Zalgo" floods that paint over neighbouring lines).
//! 5. Leading and trailing whitespace is trimmed.
//! 6. Length is counted in Unicode scalar values (`char`s).

use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::error::ErrorCode;

/// Longest nickname, in characters after normalisation and trimming.
pub const NICKNAME_MAX_CHARS: usize = 32;
/// Default longest message body (the server's limit is configurable).
pub const DEFAULT_BODY_MAX_CHARS: usize = 2000;
/// Most combining marks allowed in a row on one base character.
pub const MAX_COMBINING_RUN: usize = 4;
/// Longest client message id.
pub const CLIENT_MESSAGE_ID_MAX_LEN: usize = 64;
/// Longest site key.
pub const SITE_KEY_MAX_LEN: usize = 64;
/// Longest page path for a page-scoped room.
pub const PAGE_PATH_MAX_LEN: usize = 256;

/// Why a piece of text was refused; mapped to a field-specific [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    /// Nothing left after stripping and trimming.
    Empty,
    /// More characters than allowed.
    TooLong { max: usize, actual: usize },
    /// A forbidden character; `what` names the rule it broke.
    Forbidden { what: &'static str, at: usize },
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Empty => f.write_str("is empty"),
            TextError::TooLong { max, actual } => {
                write!(f, "is {actual} characters long; the maximum is {max}")
            }
            TextError::Forbidden { what, at } => {
                write!(f, "contains {what} at character {at}")
            }
        }
    }
}

fn is_stripped_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}' | '\u{2060}' | '\u{FEFF}' | '\u{180E}' | '\u{00AD}'
    )
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn is_joiner(c: char) -> bool {
    matches!(c, '\u{200C}' | '\u{200D}')
}

/// Applies the text rules in the module documentation.
fn clean_text(input: &str, multiline: bool, max_chars: usize) -> Result<String, TextError> {
    let mut out = String::with_capacity(input.len());
    let mut chars = input
        .nfc()
        .filter(|c| !is_stripped_invisible(*c))
        .peekable();
    while let Some(c) = chars.next() {
        if c == '\r' && multiline {
            // \r\n and a lone \r both become \n.
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }

    let mut previous: Option<char> = None;
    let mut combining_run = 0usize;
    for (index, c) in out.chars().enumerate() {
        let forbidden = if c.is_control() && !(multiline && (c == '\n' || c == '\t')) {
            Some("a control character")
        } else if is_bidi_control(c) {
            Some("a bidi control character")
        } else if matches!(c, '\u{2028}' | '\u{2029}' | '\u{FFFE}' | '\u{FFFF}') {
            Some("a separator or noncharacter")
        } else if (is_joiner(c) && previous.is_none_or(|p| is_joiner(p) || p.is_whitespace()))
            || (c.is_whitespace() && previous.is_some_and(is_joiner))
        {
            Some("a zero-width run")
        } else {
            None
        };
        if let Some(what) = forbidden {
            return Err(TextError::Forbidden { what, at: index });
        }
        if is_combining_mark(c) {
            combining_run += 1;
            if combining_run > MAX_COMBINING_RUN {
                return Err(TextError::Forbidden {
                    what: "too many combining marks in a row",
                    at: index,
                });
            }
        } else {
            combining_run = 0;
        }
        previous = Some(c);
    }
    if previous.is_some_and(is_joiner) {
        return Err(TextError::Forbidden {
            what: "a zero-width run",
            at: out.chars().count() - 1,
        });
    }

    let trimmed = out.trim();
    if trimmed.is_empty() {
        return Err(TextError::Empty);
    }
    let actual = trimmed.chars().count();
    if actual > max_chars {
        return Err(TextError::TooLong {
            max: max_chars,
            actual,
        });
    }
    Ok(if trimmed.len() == out.len() {
        out
    } else {
        trimmed.to_owned()
    })
}

/// A visitor's display name: 1–32 characters, single line, clean text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Nickname(String);

impl Nickname {
    pub fn parse(input: &str) -> Result<Self, TextError> {
        clean_text(input, false, NICKNAME_MAX_CHARS).map(Nickname)
    }

    /// The error code for a refused nickname.
    pub fn error_code(error: &TextError) -> ErrorCode {
        match error {
            TextError::Empty => ErrorCode::NicknameEmpty,
            TextError::TooLong { .. } => ErrorCode::NicknameTooLong,
            TextError::Forbidden { .. } => ErrorCode::NicknameInvalid,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for Nickname {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Nickname::parse(&raw).map_err(|e| serde::de::Error::custom(format!("nickname {e}")))
    }
}

impl fmt::Display for Nickname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A chat message body: 1–`max` characters, newlines and tabs allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MessageBody(String);

impl MessageBody {
    pub fn parse(input: &str, max_chars: usize) -> Result<Self, TextError> {
        clean_text(input, true, max_chars).map(MessageBody)
    }

    /// The error code for a refused body.
    pub fn error_code(error: &TextError) -> ErrorCode {
        match error {
            TextError::Empty => ErrorCode::BodyEmpty,
            TextError::TooLong { .. } => ErrorCode::BodyTooLong,
            TextError::Forbidden { .. } => ErrorCode::BodyInvalid,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Error for the small identifier-like types below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierError {
    pub code: ErrorCode,
    pub message: String,
}

impl fmt::Display for IdentifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IdentifierError {}
impl std::error::Error for TextError {}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// The client's id for a message, used to make sends idempotent:
/// 1–64 ASCII letters, digits, `-`, `_`, `.` or `:` (a UUID fits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    pub fn parse(input: &str) -> Result<Self, IdentifierError> {
        if input.is_empty()
            || input.len() > CLIENT_MESSAGE_ID_MAX_LEN
            || !input.chars().all(is_id_char)
        {
            return Err(IdentifierError {
                code: ErrorCode::InvalidClientMessageId,
                message: format!(
                    "client_message_id must be 1-{CLIENT_MESSAGE_ID_MAX_LEN} characters of A-Z a-z 0-9 - _ . :"
                ),
            });
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A site's public key, as written in the embed snippet's `data-site`:
/// 1–64 ASCII letters, digits, `-` or `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SiteKey(String);

impl SiteKey {
    pub fn parse(input: &str) -> Result<Self, IdentifierError> {
        if input.is_empty()
            || input.len() > SITE_KEY_MAX_LEN
            || !input
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(IdentifierError {
                code: ErrorCode::InvalidSiteKey,
                message: format!(
                    "site_key must be 1-{SITE_KEY_MAX_LEN} characters of A-Z a-z 0-9 - _"
                ),
            });
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The path of a page, naming a page-scoped room: starts with `/`, at most
/// 256 bytes of printable ASCII (browsers percent-encode the rest), with any
/// query string or fragment cut off so `/post?utm=x` and `/post` share a room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PagePath(String);

impl PagePath {
    pub fn parse(input: &str) -> Result<Self, IdentifierError> {
        let path = input.split(['?', '#']).next().unwrap_or_default();
        if !path.starts_with('/')
            || path.len() > PAGE_PATH_MAX_LEN
            || !path.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(IdentifierError {
                code: ErrorCode::InvalidPage,
                message: format!(
                    "page must be a URL path starting with '/', at most {PAGE_PATH_MAX_LEN} printable ASCII bytes"
                ),
            });
        }
        Ok(Self(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nick(s: &str) -> Result<String, TextError> {
        Nickname::parse(s).map(Nickname::into_inner)
    }

    #[test]
    fn nickname_is_trimmed_and_nfc_normalised() {
        assert_eq!(nick("  Ann  ").as_deref(), Ok("Ann"));
        assert_eq!(nick("Rene\u{0301}").as_deref(), Ok("René"));
        assert_eq!(nick("Rene\u{0301}").map(|s| s.chars().count()), Ok(4));
    }

    #[test]
    fn nickname_length_is_counted_after_normalisation() {
        assert!(nick(&"a".repeat(32)).is_ok());
        assert_eq!(
            nick(&"a".repeat(33)),
            Err(TextError::TooLong {
                max: 32,
                actual: 33
            })
        );
        // 32 decomposed é = 64 code points, but 32 characters once composed.
        assert!(nick(&"e\u{0301}".repeat(32)).is_ok());
        assert_eq!(nick("   "), Err(TextError::Empty));
        assert_eq!(nick(""), Err(TextError::Empty));
        assert_eq!(nick("\u{200B}\u{FEFF}"), Err(TextError::Empty));
    }

    #[test]
    fn nickname_rejects_controls_bidi_and_newlines() {
        for bad in [
            "a\u{202E}b",
            "a\u{2066}b",
            "a\u{200F}b",
            "a\nb",
            "a\tb",
            "a\u{0007}b",
            "a\u{2028}b",
        ] {
            assert!(
                matches!(nick(bad), Err(TextError::Forbidden { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn invisible_characters_are_stripped() {
        assert_eq!(
            nick("a\u{200B}d\u{2060}m\u{FEFF}in").as_deref(),
            Ok("admin")
        );
    }

    #[test]
    fn zero_width_joiner_runs_are_refused_but_single_joiners_kept() {
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        assert_eq!(nick(family).as_deref(), Ok(family));
        assert!(nick("a\u{200D}\u{200D}b").is_err());
        assert!(nick("\u{200D}ab").is_err());
        assert!(nick("ab\u{200C}").is_err());
        assert!(nick("ab\u{200C} ").is_err());
    }

    #[test]
    fn combining_mark_floods_are_refused() {
        // `x` has no precomposed accented forms, so NFC leaves every mark.
        assert!(nick("x\u{0300}\u{0301}\u{0302}\u{0303}").is_ok());
        assert!(nick("x\u{0300}\u{0301}\u{0302}\u{0303}\u{0304}").is_err());
        let zalgo: String = std::iter::once('Z')
            .chain(std::iter::repeat_n('\u{0336}', 50))
            .collect();
        assert!(MessageBody::parse(&zalgo, 2000).is_err());
    }

    #[test]
    fn body_keeps_newlines_and_tabs_and_normalises_cr() {
        let body = MessageBody::parse("  line one\r\nline\ttwo\rthree  ", 2000).expect("valid");
        assert_eq!(body.as_str(), "line one\nline\ttwo\nthree");
        assert!(MessageBody::parse("a\u{0000}b", 2000).is_err());
        assert!(MessageBody::parse("a\u{202E}b", 2000).is_err());
    }

    #[test]
    fn body_limit_is_configurable() {
        assert!(MessageBody::parse(&"x".repeat(10), 10).is_ok());
        assert_eq!(
            MessageBody::parse(&"x".repeat(11), 10),
            Err(TextError::TooLong {
                max: 10,
                actual: 11
            })
        );
        assert_eq!(MessageBody::parse(" \n\t ", 10), Err(TextError::Empty));
    }

    #[test]
    fn html_is_kept_verbatim_as_text() {
        // Escaping is the renderer's job (textContent); the body is data.
        let xss = "<img src=x onerror=alert(1)>";
        assert_eq!(
            MessageBody::parse(xss, 2000)
                .map(MessageBody::into_inner)
                .as_deref(),
            Ok(xss)
        );
    }

    #[test]
    fn identifiers() {
        assert!(ClientMessageId::parse("4f1c2a9e-0b7d-4c1e-9a63-2b4f5d6e7f80").is_ok());
        assert!(ClientMessageId::parse("").is_err());
        assert!(ClientMessageId::parse(&"a".repeat(65)).is_err());
        assert!(ClientMessageId::parse("a b").is_err());
        assert!(SiteKey::parse("demo").is_ok());
        assert!(SiteKey::parse("de mo").is_err());
        assert!(SiteKey::parse("dé").is_err());
        assert_eq!(
            PagePath::parse("/post?utm=1#c").map(|p| p.as_str().to_owned()),
            Ok("/post".to_owned())
        );
        assert!(PagePath::parse("post").is_err());
        assert!(PagePath::parse("/a b").is_err());
        assert!(PagePath::parse(&format!("/{}", "a".repeat(256))).is_err());
    }
}

//! Moderation checks that need no I/O: the per-site word filter, look-alike
//! nickname keys and reserved names, link counting and the flood fingerprint.
//!
//! They live in the protocol crate so the server, the bench suite and any
//! client agree on exactly what counts as "the same word", "the same name",
//! "a link" and "the same message". Everything here is a pure function of its
//! input; storage of filters, bans and counters is the server's business.
//!
//! ## Folding: why "ass", "ＡＳＳ", "a\u{200B}ss" and "аss" are one word
//!
//! A filter that compares raw text is beaten by the first visitor who types a
//! capital letter. Every check here therefore compares *folded* text, built
//! one input character at a time:
//!
//! 1. zero-width and other format characters (Unicode `Cf`, and the rest of
//!    `Default_Ignorable_Code_Point`) are dropped;
//! 2. NFKD compatibility decomposition (fullwidth `Ａ` → `A`, `ﬁ` → `fi`);
//! 3. Unicode lowercase;
//! 4. the UTS #39 confusable *skeleton* (Cyrillic `а` → Latin `a`, `0` → `O`,
//!    `1` → `l`, `m` → `rn`), lowercased again because some prototypes are
//!    capitals (`0` → `O`);
//! 5. combining marks are dropped (before and after step 4), so `a\u{301}`
//!    and `a` fold alike;
//! 6. any whitespace becomes one space, and runs of it collapse.
//!
//! Folding per character (rather than the whole string at once) lets the word
//! filter remember which original bytes each folded character came from, so
//! masking can rewrite exactly the matched span and leave the rest of the
//! message byte-identical. Because every step except composition works per
//! character and combining marks are dropped, the result matches folding the
//! whole string.

use std::collections::HashMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use unicode_security::skeleton;

// ---------------------------------------------------------------------------
// Folding
// ---------------------------------------------------------------------------

/// Characters that render as nothing: `Default_Ignorable_Code_Point` plus the
/// few `Cf` characters outside it. Dropped before anything is compared, since
/// they are the cheapest way to split a word without changing how it looks.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{0600}'..='\u{0605}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Punctuation, for nickname keys and the flood fingerprint's trailing trim.
///
/// std has no Unicode general-category lookup, so this lists the blocks that
/// matter after folding: NFKD has already turned fullwidth and small-form
/// punctuation into ASCII. ASCII symbols (`$`, `|`, `~`) count too: in a
/// nickname they are decoration, not identity.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            c,
            '\u{00A1}'
                | '\u{00A7}'
                | '\u{00AB}'
                | '\u{00B6}'
                | '\u{00B7}'
                | '\u{00BB}'
                | '\u{00BF}'
                | '\u{037E}'
                | '\u{0387}'
                | '\u{055A}'..='\u{055F}'
                | '\u{0589}'
                | '\u{05BE}'
                | '\u{05C0}'
                | '\u{05C3}'
                | '\u{05F3}'..='\u{05F4}'
                | '\u{060C}'..='\u{060D}'
                | '\u{061B}'
                | '\u{061F}'
                | '\u{066A}'..='\u{066D}'
                | '\u{06D4}'
                | '\u{0964}'..='\u{0965}'
                | '\u{2010}'..='\u{2027}'
                | '\u{2030}'..='\u{205E}'
                | '\u{2E00}'..='\u{2E5D}'
                | '\u{3001}'..='\u{3003}'
                | '\u{3008}'..='\u{3011}'
                | '\u{3014}'..='\u{301F}'
                | '\u{30FB}'
                | '\u{FE10}'..='\u{FE19}'
                | '\u{FE30}'..='\u{FE6B}'
                | '\u{FF01}'..='\u{FF0F}'
                | '\u{FF1A}'..='\u{FF20}'
                | '\u{FF3B}'..='\u{FF40}'
                | '\u{FF5B}'..='\u{FF65}'
        )
}

/// Appends a single space unless `out` already ends with one, so whitespace
/// runs of any length and kind fold to one space.
fn push_space(out: &mut Vec<char>) {
    if out.last() != Some(&' ') {
        out.push(' ');
    }
}

/// Appends the folded form of one character to `out` (see the module docs).
/// Appends nothing for invisible characters, combining marks and the second
/// and later characters of a whitespace run.
fn fold_into(c: char, out: &mut Vec<char>) {
    if is_invisible(c) {
        return;
    }
    if c.is_whitespace() {
        push_space(out);
        return;
    }
    for d in std::iter::once(c).nfkd() {
        // NFKD turns e.g. NBSP-like compatibility spaces into ' '.
        if d.is_whitespace() {
            push_space(out);
            continue;
        }
        for l in d.to_lowercase() {
            // Marks are dropped before the skeleton too, so a mark whose
            // prototype is a spacing character cannot be smuggled in.
            if is_combining_mark(l) || is_invisible(l) {
                continue;
            }
            let mut buf = [0u8; 4];
            for s in skeleton(l.encode_utf8(&mut buf)) {
                for t in s.to_lowercase() {
                    if is_combining_mark(t) || is_invisible(t) {
                        continue;
                    }
                    if t.is_whitespace() {
                        push_space(out);
                    } else {
                        out.push(t);
                    }
                }
            }
        }
    }
}

/// Folds a whole string and trims the single spaces folding may leave at
/// either end.
fn fold_str(s: &str) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        fold_into(c, &mut out);
    }
    trim_spaces(&mut out);
    out
}

fn trim_spaces(v: &mut Vec<char>) {
    while v.last() == Some(&' ') {
        v.pop();
    }
    let lead = v.iter().take_while(|c| **c == ' ').count();
    v.drain(..lead);
}

// ---------------------------------------------------------------------------
// 1. Word filter
// ---------------------------------------------------------------------------

/// What the word filter does with a message that contains a filtered word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FilterMode {
    /// Replace each match with `*` and post the message.
    #[default]
    Mask,
    /// Refuse the whole message.
    Reject,
}

/// A site's word filter, as configured by its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WordFilter {
    pub mode: FilterMode,
    pub words: Vec<String>,
}

/// The result of running a body through a [`WordFilter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterOutcome {
    /// No filtered word found; post the body as it is.
    Clean,
    /// Mask mode found words; this is the body with every match starred out.
    Masked(String),
    /// Reject mode found a word; `word` is the configured entry that matched
    /// (the leftmost match), for the owner's log rather than the visitor.
    Rejected { word: String },
}

impl WordFilter {
    pub const MAX_WORDS: usize = 500;
    pub const MAX_WORD_CHARS: usize = 64;

    /// Checks words: each trimmed, non-empty, <= MAX_WORD_CHARS chars, no
    /// control chars; at most MAX_WORDS; returns a cleaned copy (trimmed,
    /// deduplicated case-insensitively) or an error message string.
    ///
    /// Deduplication uses the matcher's own folding, so entries that would
    /// match exactly the same text ("Ass", "ASS", "аss" with a Cyrillic а)
    /// are kept once, first spelling wins. A word made only of invisible
    /// characters is refused: it would fold to nothing and match nowhere,
    /// which the owner would not expect.
    pub fn validated(self) -> Result<WordFilter, String> {
        if self.words.len() > Self::MAX_WORDS {
            return Err(format!(
                "too many words: {} (at most {})",
                self.words.len(),
                Self::MAX_WORDS
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut words = Vec::with_capacity(self.words.len());
        for (i, raw) in self.words.iter().enumerate() {
            let n = i + 1;
            let word = raw.trim();
            if word.is_empty() {
                return Err(format!("word {n} is empty"));
            }
            let chars = word.chars().count();
            if chars > Self::MAX_WORD_CHARS {
                return Err(format!(
                    "word {n} is too long: {chars} characters (at most {})",
                    Self::MAX_WORD_CHARS
                ));
            }
            if word.chars().any(char::is_control) {
                return Err(format!("word {n} contains a control character"));
            }
            let folded = fold_str(word);
            if folded.is_empty() {
                return Err(format!("word {n} has no visible characters"));
            }
            if seen.insert(folded) {
                words.push(word.to_owned());
            }
        }
        Ok(WordFilter {
            mode: self.mode,
            words,
        })
    }

    /// Folds the word list once; keep the result when filtering many bodies
    /// with the same list (folding 500 words costs more than one body).
    pub fn compile(&self) -> CompiledWordFilter {
        let mut words = Vec::with_capacity(self.words.len());
        let mut by_first: HashMap<char, Vec<usize>> = HashMap::new();
        for word in &self.words {
            let folded = fold_str(word);
            // An unvalidated filter may hold blank entries; an empty pattern
            // would match everywhere, so it is skipped, not trusted.
            let Some(&first) = folded.first() else {
                continue;
            };
            by_first.entry(first).or_default().push(words.len());
            words.push((word.trim().to_owned(), folded));
        }
        // Longest first, so "bad word" wins over "bad" at the same position.
        for bucket in by_first.values_mut() {
            bucket.sort_by_key(|&i| std::cmp::Reverse(words[i].1.len()));
        }
        CompiledWordFilter {
            mode: self.mode,
            words,
            by_first,
        }
    }

    /// Runs `body` through the filter. See [`CompiledWordFilter::apply`].
    pub fn apply(&self, body: &str) -> FilterOutcome {
        self.compile().apply(body)
    }
}

/// A [`WordFilter`] with its words folded and indexed by first character.
#[derive(Debug, Clone)]
pub struct CompiledWordFilter {
    mode: FilterMode,
    /// (configured spelling, folded form), folded form never empty.
    words: Vec<(String, Vec<char>)>,
    /// Folded first character → indices into `words`, longest first.
    by_first: HashMap<char, Vec<usize>>,
}

/// One original character of a body: its bytes and what folding made of it.
struct Source {
    bytes: Range<usize>,
    /// Folding produced at least one character (so it is "visible").
    emitted: bool,
    whitespace: bool,
}

/// A body folded once, with each folded character's original character.
struct FoldedBody {
    chars: Vec<char>,
    /// `owner[i]` is the index in `sources` that produced `chars[i]`.
    owner: Vec<usize>,
    sources: Vec<Source>,
}

impl FoldedBody {
    fn new(body: &str) -> Self {
        let mut chars = Vec::with_capacity(body.len());
        let mut owner = Vec::with_capacity(body.len());
        let mut sources = Vec::with_capacity(body.len());
        for (start, c) in body.char_indices() {
            let before = chars.len();
            fold_into(c, &mut chars);
            owner.resize(chars.len(), sources.len());
            sources.push(Source {
                bytes: start..start + c.len_utf8(),
                emitted: chars.len() > before,
                whitespace: c.is_whitespace(),
            });
        }
        FoldedBody {
            chars,
            owner,
            sources,
        }
    }

    /// Whether a match may start at folded index `i`: it must begin an
    /// original character (not the "n" of an `m` folded to "rn") and must
    /// not follow a letter or digit (whole words only: no "ass" in "class").
    fn can_start(&self, i: usize) -> bool {
        i == 0 || (self.owner[i - 1] != self.owner[i] && !self.chars[i - 1].is_alphanumeric())
    }

    /// The mirror of [`Self::can_start`] for a match ending before `end`.
    fn can_end(&self, end: usize) -> bool {
        end == self.chars.len()
            || (self.owner[end - 1] != self.owner[end] && !self.chars[end].is_alphanumeric())
    }

    /// Original source indices covered by a folded match: from the character
    /// that produced its first folded char to the one that produced its last,
    /// plus any marks or invisible characters stuck to the end (a combining
    /// accent left after the stars would sit on the last `*`).
    fn source_span(&self, folded: Range<usize>) -> Range<usize> {
        let first = self.owner[folded.start];
        let mut last = self.owner[folded.end - 1] + 1;
        while let Some(s) = self.sources.get(last) {
            if s.emitted || s.whitespace {
                break;
            }
            last += 1;
        }
        first..last
    }
}

impl CompiledWordFilter {
    /// Leftmost-longest, non-overlapping matches as (word index, folded range).
    ///
    /// Cost: one pass over the folded body; at each position where a word may
    /// start, only the words sharing its first folded character are compared,
    /// and a comparison stops at the first differing character. Bounded by
    /// body × words × word length, in practice far below it.
    fn matches(&self, body: &FoldedBody, first_only: bool) -> Vec<(usize, Range<usize>)> {
        let n = body.chars.len();
        let mut found = Vec::new();
        let mut i = 0;
        'scan: while i < n {
            if body.can_start(i)
                && let Some(bucket) = self.by_first.get(&body.chars[i])
            {
                for &w in bucket {
                    let pattern = &self.words[w].1;
                    let end = i + pattern.len();
                    if end <= n && body.chars[i..end] == pattern[..] && body.can_end(end) {
                        found.push((w, i..end));
                        if first_only {
                            break 'scan;
                        }
                        i = end;
                        continue 'scan;
                    }
                }
            }
            i += 1;
        }
        found
    }

    /// Runs `body` through the filter.
    ///
    /// Mask mode replaces each matched span of the original body with one `*`
    /// per visible character (characters that fold to something; a run of
    /// whitespace counts once, zero-width and combining characters not at
    /// all) and leaves every other byte untouched. Reject mode reports the
    /// configured word of the leftmost match.
    pub fn apply(&self, body: &str) -> FilterOutcome {
        if self.words.is_empty() {
            return FilterOutcome::Clean;
        }
        let folded = FoldedBody::new(body);
        let found = self.matches(&folded, self.mode == FilterMode::Reject);
        if found.is_empty() {
            return FilterOutcome::Clean;
        }
        match self.mode {
            FilterMode::Reject => {
                let word = found
                    .first()
                    .map(|(w, _)| self.words[*w].0.clone())
                    .unwrap_or_default();
                FilterOutcome::Rejected { word }
            }
            FilterMode::Mask => {
                let mut out = String::with_capacity(body.len());
                let mut copied = 0;
                for (_, range) in found {
                    let span = folded.source_span(range);
                    let sources = &folded.sources[span];
                    let (Some(first), Some(last)) = (sources.first(), sources.last()) else {
                        continue;
                    };
                    // Matches never overlap, so this only guards the slice.
                    if first.bytes.start < copied {
                        continue;
                    }
                    let stars = sources.iter().filter(|s| s.emitted).count().max(1);
                    out.push_str(&body[copied..first.bytes.start]);
                    out.extend(std::iter::repeat_n('*', stars));
                    copied = last.bytes.end;
                }
                out.push_str(&body[copied..]);
                FilterOutcome::Masked(out)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Nicknames
// ---------------------------------------------------------------------------

/// Names nobody but staff may use, compared by [`nickname_key`].
const RESERVED_NICKNAMES: [&str; 11] = [
    "admin",
    "administrator",
    "moderator",
    "mod",
    "chatty",
    "system",
    "owner",
    "staff",
    "support",
    "root",
    "official",
];

/// Reserved also as a prefix or suffix ("admin_bob", "SiteModerator"): these
/// are the words that make a visitor look like they speak for the site.
const RESERVED_AFFIXES: [&str; 3] = ["admin", "moderator", "administrator"];

/// The UTS #39 skeleton of a nickname after NFKC + lowercase, with
/// whitespace, punctuation, zero-width and combining marks removed: two names
/// with the same key look alike ("Admin", "ADMIN", "Аdmin" with a Cyrillic А,
/// "a d m i n", "admin.", "ad\u{200B}min" → same key).
///
/// Implemented with the module's per-character folding (NFKD, lowercase,
/// skeleton, lowercase again), which gives the same result because the
/// skeleton decomposes anyway and marks are dropped. The key is for
/// comparison only: it is not readable ("admin" → "adrnin", since the
/// skeleton of `m` is `rn`) and must never be shown. A name made only of
/// punctuation has an empty key.
pub fn nickname_key(nickname: &str) -> String {
    fold_str(nickname)
        .into_iter()
        .filter(|c| !c.is_whitespace() && !is_punctuation(*c))
        // Lowercasing comes before the skeleton, so a capital I ("BiII")
        // would key as "biii" while it looks like "Bill": fold i and l.
        .map(|c| if c == 'i' { 'l' } else { c })
        .collect()
}

/// Reserved nicknames a visitor may not take: admin, administrator,
/// moderator, mod, chatty, system, owner, staff, support, root, official, —
/// compared by nickname_key, and also any nickname whose key starts or ends
/// with one of admin/moderator/administrator (e.g. "admin_bob",
/// "SiteModerator").
///
/// One extra fold on top of the key: `i` and `l` are treated alike here.
/// The key lowercases before taking the skeleton, so "ADMlN" (lowercase L)
/// keys as "admln", yet on screen it is indistinguishable from "ADMIN". A
/// false positive costs a visitor one rename; a false negative lets them
/// impersonate staff.
pub fn is_reserved_nickname(nickname: &str) -> bool {
    fn strict(s: &str) -> String {
        nickname_key(s)
            .chars()
            .map(|c| if c == 'i' { 'l' } else { c })
            .collect()
    }
    let key = strict(nickname);
    if key.is_empty() {
        return false;
    }
    RESERVED_NICKNAMES.iter().any(|r| strict(r) == key)
        || RESERVED_AFFIXES.iter().any(|a| {
            let affix = strict(a);
            key.starts_with(&affix) || key.ends_with(&affix)
        })
}

// ---------------------------------------------------------------------------
// 3. Links
// ---------------------------------------------------------------------------

/// Top-level domains that make a bare `name.tld` count as a link. Kept short
/// on purpose: every entry is a chance to flag ordinary text ("file.txt"
/// would be a link if `txt` were here).
const LINK_TLDS: [&str; 20] = [
    "com", "net", "org", "io", "info", "biz", "ru", "cn", "xyz", "top", "co", "me", "app", "dev",
    "site", "online", "shop", "de", "uk", "fr",
];

/// Characters that glue onto a word, so a link cannot start right after one
/// ("bob@example.com" is an e-mail address, not a link).
fn joins_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '@' | '_' | '-' | '.')
}

fn starts_with(text: &[char], prefix: &str) -> bool {
    prefix
        .chars()
        .enumerate()
        .all(|(i, p)| text.get(i) == Some(&p))
}

/// Index of the next whitespace at or after `from`: a URL runs to there.
fn token_end(text: &[char], from: usize) -> usize {
    text[from..]
        .iter()
        .position(|c| c.is_whitespace())
        .map_or(text.len(), |p| from + p)
}

/// `host` is a run of letters, digits, `-` and `.`; it is a bare domain if,
/// after trailing dots and hyphens (sentence punctuation) are cut, its last
/// label is a listed TLD and the label before it is not empty.
fn is_bare_domain(host: &[char]) -> bool {
    let trimmed_len = host.len()
        - host
            .iter()
            .rev()
            .take_while(|c| matches!(c, '.' | '-'))
            .count();
    let host = &host[..trimmed_len];
    let mut labels = host.rsplit(|c| *c == '.');
    let (Some(tld), Some(name)) = (labels.next(), labels.next()) else {
        return false;
    };
    if name.is_empty() {
        return false;
    }
    let tld: String = tld.iter().collect();
    LINK_TLDS.contains(&tld.as_str())
}

/// Counts links in a message body: http:// and https:// URLs, `www.` hosts,
/// and bare domains with a common TLD followed by a path or at word boundary
/// (e.g. "evil.com/x", "example.org"). Case-insensitive; each URL counts once.
///
/// The body is NFKC-folded and stripped of invisible characters first, so
/// "ｅｖｉｌ．ｃｏｍ" and "evil\u{200B}.com" count too. A URL is taken to run
/// to the next whitespace, so "https://www.evil.com/a.org" is one link.
/// E-mail addresses are not counted. Confusable folding is deliberately not
/// applied here: it would turn ".com" into ".corn".
pub fn count_links(body: &str) -> usize {
    let text: Vec<char> = body
        .nfkc()
        .filter(|c| !is_invisible(*c))
        .flat_map(char::to_lowercase)
        .collect();
    let n = text.len();
    let mut count = 0;
    let mut i = 0;
    while i < n {
        let at_boundary = i == 0 || !joins_word(text[i - 1]);
        if !at_boundary {
            i += 1;
            continue;
        }
        let rest = &text[i..];
        let scheme = ["https://", "http://"]
            .into_iter()
            .find(|s| starts_with(rest, s))
            .map(|s| s.len());
        if let Some(len) = scheme
            && text.get(i + len).is_some_and(|c| !c.is_whitespace())
        {
            count += 1;
            i = token_end(&text, i + len);
            continue;
        }
        if starts_with(rest, "www.") && text.get(i + 4).is_some_and(|c| c.is_alphanumeric()) {
            count += 1;
            i = token_end(&text, i + 4);
            continue;
        }
        if text[i].is_alphanumeric() {
            let host_len = rest
                .iter()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '.'))
                .count();
            let end = i + host_len;
            let ends_word = text.get(end).is_none_or(|c| !matches!(c, '_' | '@'));
            if ends_word && is_bare_domain(&text[i..end]) {
                count += 1;
                i = token_end(&text, end);
            } else {
                // The whole run failed; no later start inside it can end in
                // a different TLD, so skip it (keeps the scan linear).
                i = end;
            }
            continue;
        }
        i += 1;
    }
    count
}

// ---------------------------------------------------------------------------
// 4. Flood fingerprint
// ---------------------------------------------------------------------------

/// A fingerprint of a body for the repeated-message check: folded like the
/// word filter (case, NFKC, confusables, zero-width and combining marks),
/// whitespace collapsed, trailing punctuation/emoji-variation removed; then a
/// 64-bit FNV-1a hash of that, as 16 lowercase hex digits. "Buy now!!!",
/// "buy  now", "BUY NOW" give the same fingerprint; "buy now 2" does not.
///
/// FNV-1a is not collision-resistant, which is fine: a collision only makes
/// two different messages count as one repeat, and an attacker gains nothing
/// by forging one. It is stable across builds and platforms, unlike std's
/// `DefaultHasher`, so fingerprints may be stored or shared between servers.
pub fn flood_fingerprint(body: &str) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    let mut folded = fold_str(body);
    // Emoji variation selectors are already gone (they are invisible).
    while folded
        .last()
        .is_some_and(|c| *c == ' ' || is_punctuation(*c))
    {
        folded.pop();
    }
    let mut hash = OFFSET;
    let mut buf = [0u8; 4];
    for c in folded {
        for byte in c.encode_utf8(&mut buf).bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(mode: FilterMode, words: &[&str]) -> WordFilter {
        WordFilter {
            mode,
            words: words.iter().map(|w| (*w).to_owned()).collect(),
        }
    }

    fn masked(words: &[&str], body: &str) -> FilterOutcome {
        filter(FilterMode::Mask, words).apply(body)
    }

    fn m(s: &str) -> FilterOutcome {
        FilterOutcome::Masked(s.to_owned())
    }

    // --- word filter: masking ---

    #[test]
    fn masking_keeps_the_surrounding_text_byte_identical() {
        let body = "Héllo  🙂 you ass,\tsee\u{00A0}you!";
        assert_eq!(
            masked(&["ass"], body),
            m("Héllo  🙂 you ***,\tsee\u{00A0}you!")
        );
    }

    #[test]
    fn masking_replaces_every_occurrence() {
        assert_eq!(masked(&["ass"], "ass and ass"), m("*** and ***"));
    }

    #[test]
    fn a_clean_body_is_reported_clean() {
        assert_eq!(masked(&["ass"], "hello there"), FilterOutcome::Clean);
        assert_eq!(masked(&[], "ass"), FilterOutcome::Clean);
    }

    #[test]
    fn words_only_match_whole_words() {
        assert_eq!(
            masked(&["ass"], "a class about the passage, assess it"),
            FilterOutcome::Clean
        );
        assert_eq!(masked(&["ass"], "ass2"), FilterOutcome::Clean);
        assert_eq!(masked(&["ass"], "(ass)"), m("(***)"));
    }

    #[test]
    fn matching_ignores_case() {
        assert_eq!(masked(&["ass"], "You ASS"), m("You ***"));
        assert_eq!(masked(&["ASS"], "you ass"), m("you ***"));
    }

    #[test]
    fn matching_folds_fullwidth_letters_and_ligatures() {
        assert_eq!(masked(&["ass"], "you ａｓｓ"), m("you ***"));
        assert_eq!(masked(&["fish"], "ﬁsh!"), m("***!"));
    }

    #[test]
    fn matching_ignores_zero_width_characters_inside_the_word() {
        assert_eq!(masked(&["ass"], "you a\u{200B}s\u{2060}s!"), m("you ***!"));
        assert_eq!(masked(&["ass"], "a\u{00AD}ss"), m("***"));
    }

    #[test]
    fn matching_ignores_combining_marks_inside_and_after_the_word() {
        assert_eq!(
            masked(&["ass"], "a\u{0301}s\u{0308}s\u{0300} x"),
            m("*** x")
        );
        assert_eq!(masked(&["ass"], "áss"), m("***"));
    }

    #[test]
    fn matching_sees_through_cyrillic_lookalikes() {
        // U+0430 CYRILLIC SMALL LETTER A, U+0455 CYRILLIC SMALL LETTER DZE.
        assert_eq!(masked(&["ass"], "you \u{0430}\u{0455}s"), m("you ***"));
    }

    #[test]
    fn a_two_word_entry_matches_across_any_whitespace_run() {
        let words = ["bad word"];
        assert_eq!(masked(&words, "a bad word here"), m("a ******** here"));
        assert_eq!(masked(&words, "a BAD \t\n  word!"), m("a ********!"));
        assert_eq!(masked(&words, "badword"), FilterOutcome::Clean);
    }

    #[test]
    fn the_longest_entry_wins_at_the_same_position() {
        assert_eq!(masked(&["bad", "bad word"], "bad word"), m("********"));
    }

    #[test]
    fn blank_entries_in_an_unvalidated_filter_match_nothing() {
        assert_eq!(
            masked(&["", "  ", "\u{200B}"], "hello"),
            FilterOutcome::Clean
        );
    }

    // --- word filter: reject ---

    #[test]
    fn reject_mode_returns_the_configured_word() {
        let f = filter(FilterMode::Reject, &["nice", "Bad Word"]);
        assert_eq!(
            f.apply("such a bad  WORD"),
            FilterOutcome::Rejected {
                word: "Bad Word".to_owned()
            }
        );
        assert_eq!(f.apply("a badword"), FilterOutcome::Clean);
    }

    #[test]
    fn a_compiled_filter_gives_the_same_outcome() {
        let f = filter(FilterMode::Mask, &["ass"]);
        assert_eq!(f.compile().apply("ass"), f.apply("ass"));
    }

    // --- word filter: validation ---

    #[test]
    fn validation_trims_and_deduplicates_case_insensitively() {
        let f = filter(FilterMode::Reject, &["  Ass ", "ass", "ASS", "bad word"]);
        assert_eq!(
            f.validated(),
            Ok(filter(FilterMode::Reject, &["Ass", "bad word"]))
        );
    }

    #[test]
    fn validation_rejects_an_empty_word() {
        let err = filter(FilterMode::Mask, &["ok", "   "]).validated();
        assert_eq!(err, Err("word 2 is empty".to_owned()));
    }

    #[test]
    fn validation_rejects_a_word_of_only_invisible_characters() {
        assert!(filter(FilterMode::Mask, &["\u{200B}"]).validated().is_err());
    }

    #[test]
    fn validation_rejects_too_many_words() {
        let words: Vec<String> = (0..=WordFilter::MAX_WORDS)
            .map(|i| format!("w{i}"))
            .collect();
        let f = WordFilter {
            mode: FilterMode::Mask,
            words,
        };
        assert!(f.clone().validated().is_err());
        let mut ok = f;
        ok.words.pop();
        assert_eq!(ok.validated().map(|f| f.words.len()), Ok(500));
    }

    #[test]
    fn validation_rejects_a_too_long_word() {
        let long = "é".repeat(WordFilter::MAX_WORD_CHARS + 1);
        assert!(filter(FilterMode::Mask, &[&long]).validated().is_err());
        let max = "é".repeat(WordFilter::MAX_WORD_CHARS);
        assert!(filter(FilterMode::Mask, &[&max]).validated().is_ok());
    }

    #[test]
    fn validation_rejects_control_characters() {
        assert!(
            filter(FilterMode::Mask, &["a\u{0007}b"])
                .validated()
                .is_err()
        );
        assert!(filter(FilterMode::Mask, &["a\nb"]).validated().is_err());
    }

    #[test]
    fn filter_mode_serialises_in_snake_case() {
        let json = serde_json::to_string(&filter(FilterMode::Reject, &["x"]));
        assert_eq!(
            json.ok().as_deref(),
            Some(r#"{"mode":"reject","words":["x"]}"#)
        );
    }

    // --- nicknames ---

    #[test]
    fn lookalike_nicknames_share_a_key() {
        let key = nickname_key("admin");
        for name in [
            "Admin",
            "ADMIN",
            "\u{0410}dmin",
            "a d m i n",
            "admin.",
            "ad\u{200B}min",
            "ａｄｍｉｎ",
            "a\u{0301}dmin",
        ] {
            assert_eq!(nickname_key(name), key, "{name:?}");
        }
    }

    #[test]
    fn different_nicknames_have_different_keys() {
        assert_ne!(nickname_key("Ann2"), nickname_key("Ann3"));
        // A capital I looks like a lowercase l.
        assert_eq!(nickname_key("BiII"), nickname_key("Bill"));
        assert_ne!(nickname_key("Ann"), nickname_key("Anna"));
        assert_ne!(nickname_key("bob"), nickname_key("rob"));
        assert_ne!(nickname_key("😀"), nickname_key("😁"));
    }

    #[test]
    fn the_skeleton_merges_one_and_lowercase_l_and_zero_and_o() {
        assert_eq!(nickname_key("Bill1"), nickname_key("Billl"));
        assert_eq!(nickname_key("r00t"), nickname_key("root"));
    }

    #[test]
    fn reserved_names_are_refused_in_any_disguise() {
        for name in [
            "admin",
            "Admin",
            "ADMIN",
            "\u{0410}dmin",
            "Mod",
            "m0d",
            "System",
            "root",
            "Chatty",
            "Official",
            "s u p p o r t",
        ] {
            assert!(is_reserved_nickname(name), "{name:?}");
        }
    }

    #[test]
    fn a_lowercase_l_posing_as_a_capital_i_is_reserved() {
        assert!(is_reserved_nickname("ADMlN"));
        assert!(is_reserved_nickname("ADM1N"));
    }

    #[test]
    fn names_starting_or_ending_with_admin_or_moderator_are_reserved() {
        assert!(is_reserved_nickname("admin_bob"));
        assert!(is_reserved_nickname("SiteModerator"));
        assert!(is_reserved_nickname("Administrator2"));
        assert!(is_reserved_nickname("the admin"));
    }

    #[test]
    fn ordinary_names_are_not_reserved() {
        for name in ["Ann", "Madmax", "modern", "Rooter", "badminton", "!!!", ""] {
            assert!(!is_reserved_nickname(name), "{name:?}");
        }
    }

    // --- links ---

    #[test]
    fn plain_text_has_no_links() {
        for body in [
            "hello world",
            "e.g. this, i.e. that",
            "pi is 3.14",
            "see file.txt or node.js",
            "mail bob@example.com",
            "Mr.Smith",
            "",
        ] {
            assert_eq!(count_links(body), 0, "{body:?}");
        }
    }

    #[test]
    fn one_link_is_counted_once() {
        for body in [
            "visit evil.com/x now",
            "example.org",
            "see example.org.",
            "https://www.evil.com/a.org?x=b.net",
            "HTTP://EVIL.COM",
            "go to WWW.Example.test please",
            "ｅｖｉｌ．ｃｏｍ",
            "evil\u{200B}.com",
            "(shop.example.co.uk)",
        ] {
            assert_eq!(count_links(body), 1, "{body:?}");
        }
    }

    #[test]
    fn three_links_are_counted() {
        assert_eq!(count_links("http://a.com and www.b.net, also c.io/x"), 3);
    }

    #[test]
    fn a_bare_scheme_is_not_a_link() {
        assert_eq!(count_links("type http:// then"), 0);
    }

    // --- flood fingerprint ---

    #[test]
    fn flood_fingerprint_ignores_case_spacing_and_trailing_punctuation() {
        let fp = flood_fingerprint("buy now");
        for body in [
            "Buy now!!!",
            "buy  now",
            "BUY NOW",
            "  buy\tnow  ",
            "ｂｕｙ now",
            "bu\u{200B}y now",
            "bu\u{0443} now",
        ] {
            assert_eq!(flood_fingerprint(body), fp, "{body:?}");
        }
        assert_eq!(fp.len(), 16);
        assert!(
            fp.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn flood_fingerprint_distinguishes_different_messages() {
        let fp = flood_fingerprint("buy now");
        assert_ne!(flood_fingerprint("buy now 2"), fp);
        assert_ne!(flood_fingerprint("buynow"), fp);
        assert_ne!(flood_fingerprint("now buy"), fp);
        // Emoji are content, only their variation selector is ignored.
        assert_ne!(flood_fingerprint("buy now \u{2764}"), fp);
        assert_eq!(
            flood_fingerprint("buy now \u{2764}\u{FE0F}"),
            flood_fingerprint("buy now \u{2764}")
        );
    }

    #[test]
    fn flood_fingerprint_is_fnv1a_of_the_folded_text() {
        // Known FNV-1a 64 values: "" and "a".
        assert_eq!(flood_fingerprint(""), "cbf29ce484222325");
        assert_eq!(flood_fingerprint("A"), "af63dc4c8601ec8c");
    }
}

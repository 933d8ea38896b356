//! Listen tokens: stateless, HMAC-SHA256-signed grants to listen to one player or one track
//! in one format until an expiry. Nothing is stored: the signature is the proof. A batch is a
//! signed list of items with its own expiry; tokens issued for its items (at once, or later
//! through "unlock") never outlive it.
//!
//! Text signed: `v1|<subject>|<format>|<expires>` for a token and `b1|<expires>|<ttl>|<items>`
//! for a batch, each sent as `<base64url(text)>.<base64url(mac)>`. Checks are constant-time
//! (`Mac::verify_slice`); a key rotated out (`LISTEN_SECRET_PREVIOUS`) still verifies.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::model::Id;

type HmacSha256 = Hmac<Sha256>;

/// What a token lets its holder listen to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Player(Id),
    /// A cached track, by its cache id.
    Track(String),
    /// A track named by a query (a link or a search), by the query's digest.
    Query(String),
    /// A live mount, by name.
    Mount(String),
}

impl Subject {
    pub fn query(query: &str) -> Self {
        Self::Query(digest(query))
    }

    fn encode(&self) -> String {
        match self {
            Self::Player(id) => format!("p:{id}"),
            Self::Track(id) => format!("t:{id}"),
            Self::Query(digest) => format!("q:{digest}"),
            Self::Mount(name) => format!("m:{name}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        let (kind, value) = text.split_once(':')?;
        match kind {
            "p" => value.parse().ok().map(|v| Self::Player(Id(v))),
            "t" => Some(Self::Track(value.to_string())),
            "q" => Some(Self::Query(value.to_string())),
            "m" => crate::model::is_name(value).then(|| Self::Mount(value.to_string())),
            _ => None,
        }
    }
}

fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// How a token may be listened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ogg,
    Mp3,
    Hls,
    /// Any of them.
    Any,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ogg => "ogg",
            Self::Mp3 => "mp3",
            Self::Hls => "hls",
            Self::Any => "any",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ogg" => Self::Ogg,
            "mp3" => Self::Mp3,
            "hls" => Self::Hls,
            "any" => Self::Any,
            _ => return None,
        })
    }

    pub fn allows(self, wanted: Format) -> bool {
        self == Self::Any || self == wanted
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub subject: Subject,
    pub format: Format,
    /// Unix seconds.
    pub expires: u64,
}

/// A batch: items to issue tokens for until `expires`, each token living `ttl` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub items: Vec<(Subject, Format)>,
    pub expires: u64,
    pub ttl: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed or its signature does not match")]
    Invalid,
    #[error("the token expired")]
    Expired,
    #[error("the token is for another player, track or format")]
    Elsewhere,
}

pub struct Signer {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
}

impl Signer {
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> Self {
        Self { current: current.to_vec(), previous: previous.map(<[u8]>::to_vec) }
    }

    fn mac(key: &[u8], text: &str) -> HmacSha256 {
        // HMAC takes a key of any length.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        mac.update(text.as_bytes());
        mac
    }

    fn sign_text(&self, text: &str) -> String {
        let tag = Self::mac(&self.current, text).finalize().into_bytes();
        format!("{}.{}", B64.encode(text), B64.encode(tag))
    }

    /// The signed text, when the current or the previous key signed it.
    fn open(&self, token: &str) -> Result<String, TokenError> {
        let (text, tag) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let text = B64.decode(text).map_err(|_| TokenError::Invalid)?;
        let tag = B64.decode(tag).map_err(|_| TokenError::Invalid)?;
        let text = String::from_utf8(text).map_err(|_| TokenError::Invalid)?;
        let valid = |key: &[u8]| Self::mac(key, &text).verify_slice(&tag).is_ok();
        if valid(&self.current) || self.previous.as_deref().is_some_and(valid) {
            Ok(text)
        } else {
            Err(TokenError::Invalid)
        }
    }

    pub fn sign(&self, grant: &Grant) -> String {
        self.sign_text(&format!("v1|{}|{}|{}", grant.subject.encode(), grant.format.as_str(), grant.expires))
    }

    /// The grant a token carries, when it is genuine and not expired at `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Grant, TokenError> {
        let text = self.open(token)?;
        let mut parts = text.split('|');
        let (Some("v1"), Some(subject), Some(format), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let grant = Grant {
            subject: Subject::decode(subject).ok_or(TokenError::Invalid)?,
            format: Format::parse(format).ok_or(TokenError::Invalid)?,
            expires: expires.parse().map_err(|_| TokenError::Invalid)?,
        };
        if grant.expires <= now {
            return Err(TokenError::Expired);
        }
        Ok(grant)
    }

    /// Verifies `token` and checks it grants `subject` in `format`.
    pub fn check(&self, token: &str, now: u64, subject: &Subject, format: Format) -> Result<Grant, TokenError> {
        let grant = self.verify(token, now)?;
        if &grant.subject != subject || !grant.format.allows(format) {
            return Err(TokenError::Elsewhere);
        }
        Ok(grant)
    }

    pub fn sign_batch(&self, batch: &Batch) -> String {
        let items: Vec<String> = batch.items.iter().map(|(s, f)| format!("{}/{}", s.encode(), f.as_str())).collect();
        self.sign_text(&format!("b1|{}|{}|{}", batch.expires, batch.ttl, items.join(",")))
    }

    pub fn verify_batch(&self, token: &str, now: u64) -> Result<Batch, TokenError> {
        let text = self.open(token)?;
        let mut parts = text.splitn(4, '|');
        let (Some("b1"), Some(expires), Some(ttl), Some(items)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let items = items
            .split(',')
            .filter(|i| !i.is_empty())
            .map(|item| {
                let (subject, format) = item.rsplit_once('/')?;
                Some((Subject::decode(subject)?, Format::parse(format)?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or(TokenError::Invalid)?;
        let batch = Batch {
            items,
            expires: expires.parse().map_err(|_| TokenError::Invalid)?,
            ttl: ttl.parse().map_err(|_| TokenError::Invalid)?,
        };
        if batch.expires <= now {
            return Err(TokenError::Expired);
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(expires: u64) -> Grant {
        Grant { subject: Subject::Player(Id(7)), format: Format::Ogg, expires }
    }

    #[test]
    fn a_token_verifies_until_it_expires() {
        let signer = Signer::new(b"k1", None);
        let token = signer.sign(&grant(100));
        assert_eq!(signer.check(&token, 99, &Subject::Player(Id(7)), Format::Ogg), Ok(grant(100)));
        assert_eq!(signer.verify(&token, 100), Err(TokenError::Expired));
    }

    #[test]
    fn tampering_another_key_another_subject_or_format_are_refused() {
        let signer = Signer::new(b"k1", None);
        let token = signer.sign(&grant(100));
        let (_, tag) = token.split_once('.').unwrap();
        let other_text = B64.encode("v1|p:8|ogg|100");
        assert_eq!(signer.verify(&format!("{other_text}.{tag}"), 1), Err(TokenError::Invalid));
        let at = token.len() - 5;
        let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
        let bad_tag = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
        assert_eq!(signer.verify(&bad_tag, 1), Err(TokenError::Invalid));
        assert_eq!(Signer::new(b"k2", None).verify(&token, 1), Err(TokenError::Invalid));
        assert_eq!(signer.check(&token, 1, &Subject::Player(Id(8)), Format::Ogg), Err(TokenError::Elsewhere));
        assert_eq!(signer.check(&token, 1, &Subject::Player(Id(7)), Format::Mp3), Err(TokenError::Elsewhere));
        assert_eq!(signer.verify("garbage", 1), Err(TokenError::Invalid));
    }

    #[test]
    fn a_rotated_key_still_verifies_its_tokens() {
        let old = Signer::new(b"old", None).sign(&grant(100));
        let rotated = Signer::new(b"new", Some(b"old"));
        assert!(rotated.verify(&old, 1).is_ok());
        assert!(Signer::new(b"new", None).verify(&old, 1).is_err());
    }

    #[test]
    fn batches_round_trip_and_are_not_tokens() {
        let signer = Signer::new(b"k", None);
        let batch = Batch {
            items: vec![(Subject::Player(Id(1)), Format::Hls), (Subject::query("https://x/a,b|c"), Format::Any)],
            expires: 50,
            ttl: 10,
        };
        let signed = signer.sign_batch(&batch);
        assert_eq!(signer.verify_batch(&signed, 1), Ok(batch));
        assert_eq!(signer.verify(&signed, 1), Err(TokenError::Invalid));
        assert_eq!(signer.verify_batch(&signed, 50), Err(TokenError::Expired));
    }
}

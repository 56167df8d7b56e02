use std::fmt;
use std::str::FromStr;

use crate::Error;

/// How the bytes of a received payload are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayloadFormat {
    /// An OTLP `Export*ServiceRequest` in the protobuf wire format.
    OtlpProtobuf,
    /// An OTLP `Export*ServiceRequest` in OTLP/JSON (hex ids, lowerCamelCase keys).
    OtlpJson,
    /// Newline-delimited JSON objects: plain events from non-OTLP sources.
    Ndjson,
}

impl PayloadFormat {
    /// Every format, in code order.
    pub const ALL: [PayloadFormat; 3] = [
        PayloadFormat::OtlpProtobuf,
        PayloadFormat::OtlpJson,
        PayloadFormat::Ndjson,
    ];

    /// The stable one-byte code used in envelopes and catalogs.
    pub fn code(self) -> u8 {
        match self {
            PayloadFormat::OtlpProtobuf => 1,
            PayloadFormat::OtlpJson => 2,
            PayloadFormat::Ndjson => 3,
        }
    }

    /// The format with this [`code`](Self::code), if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.code() == code)
    }

    /// The stable lowercase name: `otlp-protobuf`, `otlp-json`, `ndjson`.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::OtlpProtobuf => "otlp-protobuf",
            PayloadFormat::OtlpJson => "otlp-json",
            PayloadFormat::Ndjson => "ndjson",
        }
    }
}

impl fmt::Display for PayloadFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PayloadFormat::OtlpProtobuf => "OTLP protobuf",
            PayloadFormat::OtlpJson => "OTLP/JSON",
            PayloadFormat::Ndjson => "NDJSON",
        })
    }
}

impl FromStr for PayloadFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| Error::Unknown {
                kind: "payload format",
                value: s.to_owned(),
            })
    }
}

/// How a received payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Not compressed.
    #[default]
    None,
    /// gzip (RFC 1952), as sent with `Content-Encoding: gzip`.
    Gzip,
}

impl Compression {
    /// Every compression, in code order.
    pub const ALL: [Compression; 2] = [Compression::None, Compression::Gzip];

    /// The stable one-byte code used in envelopes and catalogs.
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
        }
    }

    /// The compression with this [`code`](Self::code), if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The stable lowercase name: `none`, `gzip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        }
    }

    /// Decompresses `payload`, borrowing it when it is not compressed.
    ///
    /// # Errors
    ///
    /// [`Error::Decompress`] when the stream is corrupt or truncated, or would decompress to
    /// more than [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN) bytes (a decompression bomb is
    /// stopped there, not read to the end).
    pub fn decompress(self, payload: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, Error> {
        use std::io::Read;
        match self {
            Compression::None => Ok(std::borrow::Cow::Borrowed(payload)),
            Compression::Gzip => {
                let limit = crate::MAX_PAYLOAD_LEN as u64;
                let mut out = Vec::with_capacity(payload.len().saturating_mul(4).min(limit as usize));
                flate2::read::MultiGzDecoder::new(payload)
                    .take(limit + 1)
                    .read_to_end(&mut out)
                    .map_err(|source| Error::Decompress {
                        compression: self,
                        source,
                    })?;
                if out.len() as u64 > limit {
                    return Err(Error::Decompress {
                        compression: self,
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("the payload decompresses to more than {limit} bytes"),
                        ),
                    });
                }
                Ok(std::borrow::Cow::Owned(out))
            }
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| Error::Unknown {
                kind: "compression",
                value: s.to_owned(),
            })
    }
}

//! HdrHistogram interval logs: one file per probe, one tagged histogram per parameter
//! point, readable by the HdrHistogram tool family (HistogramLogProcessor, hdrh in Python).
//!
//! Values are hundredths of a TSC cycle (`stats::HIST_UNITS_PER_CYCLE`); the log's
//! MaxValueDivisor is set to the same constant so its max column reads in cycles.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use crate::stats::HIST_UNITS_PER_CYCLE;

/// One tagged interval of a probe's log.
#[derive(Clone, Debug)]
pub struct Interval {
    pub tag: String,
    /// Seconds since the log's base time (the run start).
    pub start: Duration,
    pub duration: Duration,
    pub histogram: Histogram<u64>,
}

/// Turns a parameter point's text (`size=64,mode=spin`) into a tag: interval-log tags
/// may not hold commas or spaces. The empty point is `default`.
pub fn tag_for(params: &str) -> String {
    if params.is_empty() {
        return "default".into();
    }
    params.replace(',', ";").replace([' ', '\r', '\n'], "_")
}

#[derive(Debug, thiserror::Error)]
pub enum HlogError {
    #[error("interval log: {0}")]
    Write(String),
    #[error("interval log line {line}: {message}")]
    Parse { line: usize, message: String },
}

pub fn write_log(base_time: SystemTime, probe: &str, intervals: &[Interval]) -> Result<Vec<u8>, HlogError> {
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut builder = IntervalLogWriterBuilder::new();
        builder
            .add_comment(&format!("ivbench probe {probe}"))
            .add_comment(&format!("values: TSC cycles x {HIST_UNITS_PER_CYCLE}, timer overhead already subtracted"))
            .add_comment("one tagged histogram per parameter point; tag = params with ',' written as ';'")
            .with_base_time(base_time)
            .with_start_time(base_time)
            .with_max_value_divisor(HIST_UNITS_PER_CYCLE as f64);
        let mut w = builder.begin_log_with(&mut out, &mut serializer).map_err(|e| HlogError::Write(e.to_string()))?;
        for iv in intervals {
            let tag = Tag::new(&iv.tag).ok_or_else(|| HlogError::Write(format!("invalid tag `{}`", iv.tag)))?;
            w.write_histogram(&iv.histogram, iv.start, iv.duration, Some(tag))
                .map_err(|e| HlogError::Write(format!("{e:?}")))?;
        }
    }
    Ok(out)
}

/// An inflated histogram larger than this is not one of ours (3 digits, 64-bit range:
/// well under 1 MiB); a compressed "bomb" stops here instead of filling memory.
pub const MAX_INFLATED_BYTES: u64 = 4 << 20;
/// The precision ivbench writes; a log asking for more would make the reader allocate
/// a counts array hundreds of times larger.
const MAX_SIGFIG: u32 = 3;
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
const V2_HEADER_BYTES: usize = 40;

/// Checks an encoded histogram's header and size before the hdrhistogram deserializer
/// sees it (it would allocate whatever the header declares), and returns it inflated.
fn checked_payload(encoded: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let word = |b: &[u8], at: usize| -> Result<u32, String> {
        b.get(at..at + 4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .ok_or_else(|| "histogram payload is truncated".to_string())
    };
    let plain = match word(encoded, 0)? {
        V2_COOKIE => encoded.to_vec(),
        V2_COMPRESSED_COOKIE => {
            let len = word(encoded, 4)? as usize;
            let body = encoded.get(8..8 + len).ok_or("compressed histogram is shorter than its declared length")?;
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(body)
                .take(MAX_INFLATED_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("compressed histogram does not inflate: {e}"))?;
            if out.len() as u64 > MAX_INFLATED_BYTES {
                return Err(format!(
                    "histogram inflates to more than {MAX_INFLATED_BYTES} bytes; not an ivbench histogram"
                ));
            }
            out
        }
        other => return Err(format!("histogram payload has unknown cookie {other:#x}")),
    };
    if word(&plain, 0)? != V2_COOKIE {
        return Err("inflated histogram has no V2 cookie".into());
    }
    let declared = word(&plain, 4)? as usize;
    if plain.len() < V2_HEADER_BYTES || declared > plain.len() - V2_HEADER_BYTES {
        return Err(format!(
            "histogram declares {declared} payload bytes but carries {}",
            plain.len().saturating_sub(V2_HEADER_BYTES)
        ));
    }
    let sigfig = word(&plain, 12)?;
    if sigfig > MAX_SIGFIG {
        return Err(format!("histogram has {sigfig} significant digits; ivbench writes {MAX_SIGFIG}"));
    }
    Ok(plain)
}

/// Reads every tagged histogram of a log. Bytes that are not a log give an error naming
/// the line, never a panic, and never allocate more than the log's own size allows (the
/// reader is fuzzed by property tests that also bound memory).
pub fn read_log(bytes: &[u8]) -> Result<BTreeMap<String, Histogram<u64>>, HlogError> {
    let mut out = BTreeMap::new();
    let mut de = Deserializer::new();
    for (i, entry) in IntervalLogIterator::new(bytes).enumerate() {
        let line = i + 1;
        match entry {
            Ok(LogEntry::Interval(ilh)) => {
                let tag = ilh.tag().map(|t| t.as_str().to_string()).unwrap_or_else(|| "default".into());
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(ilh.encoded_histogram())
                    .map_err(|e| HlogError::Parse { line, message: format!("histogram payload is not base64: {e}") })?;
                let plain = checked_payload(&decoded).map_err(|message| HlogError::Parse { line, message })?;
                let h: Histogram<u64> = de.deserialize(&mut std::io::Cursor::new(plain)).map_err(|e| {
                    HlogError::Parse { line, message: format!("histogram payload does not decode: {e}") }
                })?;
                if out.insert(tag.clone(), h).is_some() {
                    return Err(HlogError::Parse { line, message: format!("tag `{tag}` appears twice") });
                }
            }
            Ok(_) => {}
            Err(e) => return Err(HlogError::Parse { line, message: describe_log_error(&e) }),
        }
    }
    Ok(out)
}

/// The interval-log parser's error as a sentence rather than a debug struct.
fn describe_log_error(e: &hdrhistogram::serialization::interval_log::LogIteratorError) -> String {
    use hdrhistogram::serialization::interval_log::LogIteratorError as E;
    match e {
        E::ParseError { offset } => format!("not an interval-log line (parse error at byte {offset})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{new_histogram, CycleStats};

    fn hist(values: impl Iterator<Item = u64>) -> Histogram<u64> {
        let mut h = new_histogram();
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn tags_have_no_forbidden_characters() {
        assert_eq!(tag_for(""), "default");
        assert_eq!(tag_for("size=64,mode=spin"), "size=64;mode=spin");
        assert!(Tag::new(&tag_for("a=b c,d=e")).is_some());
    }

    #[test]
    fn write_then_read_gives_the_same_percentiles() {
        let a = hist((1..=100_000u64).map(|v| v * 37 % 1_000_003));
        let b = hist((1..=5000u64).map(|v| v * v));
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let log = write_log(
            base,
            "host.memcpy",
            &[
                Interval {
                    tag: tag_for("size=64"),
                    start: Duration::from_millis(10),
                    duration: Duration::from_millis(5),
                    histogram: a.clone(),
                },
                Interval {
                    tag: tag_for("size=1518"),
                    start: Duration::from_millis(20),
                    duration: Duration::from_millis(5),
                    histogram: b.clone(),
                },
            ],
        )
        .unwrap();
        let back = read_log(&log).unwrap();
        assert_eq!(back.len(), 2);
        for (tag, orig) in [("size=64", &a), ("size=1518", &b)] {
            let got = &back[tag];
            assert_eq!(CycleStats::from_histogram(got), CycleStats::from_histogram(orig), "tag {tag}");
            assert_eq!(got.len(), orig.len());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(read_log(b"not a log\n").is_err() || read_log(b"not a log\n").unwrap().is_empty());
        let bad = b"Tag=x,0.1,0.2,3.0,@@@@\n";
        assert!(read_log(bad).is_err());
    }
}

//! Keys and values of the bus trees. Values start with a format version byte so later versions can
//! change the layout; the decoder refuses what it does not know instead of guessing.
//!
//! Message value, version 1: `0x01 ‖ str routing_key ‖ str message_id ‖ str receiver_gln ‖ str sender_gln
//! ‖ str family ‖ str event ‖ str content_type ‖ u64 timestamp ‖ str sha256 ‖ u8 resend ‖ bytes body`,
//! where `str`/`bytes` are `u32 BE length ‖ data` and integers are big-endian. The delivery count lives in
//! its own tree.

use bytes::Bytes;
use sammen_bus::{BusMessage, StoredMessage};

const VERSION: u8 = 1;

/// A record or key that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt bus record: {0}")]
pub(crate) struct CodecError(&'static str);

/// `u16 BE len ‖ queue`: the prefix of all of a queue's keys.
pub(crate) fn queue_prefix(queue: &str) -> Result<Vec<u8>, CodecError> {
    let len = u16::try_from(queue.len()).map_err(|_| CodecError("queue name too long"))?;
    let mut k = Vec::with_capacity(2 + queue.len() + 8);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(queue.as_bytes());
    Ok(k)
}

/// Key of one message: the queue prefix then the big-endian seq, so a prefix scan is in seq order.
pub(crate) fn message_key(queue: &str, seq: u64) -> Result<Vec<u8>, CodecError> {
    let mut k = queue_prefix(queue)?;
    k.extend_from_slice(&seq.to_be_bytes());
    Ok(k)
}

/// The seq of a message key whose queue prefix is `prefix_len` bytes.
pub(crate) fn seq_of(key: &[u8], prefix_len: usize) -> Result<u64, CodecError> {
    let tail = key.get(prefix_len..).ok_or(CodecError("short key"))?;
    let b: [u8; 8] = tail.try_into().map_err(|_| CodecError("bad seq in key"))?;
    Ok(u64::from_be_bytes(b))
}

/// A stored delivery count.
pub(crate) fn count(v: &[u8]) -> Result<u32, CodecError> {
    let b: [u8; 4] = v.try_into().map_err(|_| CodecError("bad delivery count"))?;
    Ok(u32::from_be_bytes(b))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Bodies are bounded far below 4 GiB by ingress; saturate rather than wrap if that ever changed,
    // which the decoder then reports as corrupt instead of misreading.
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

/// Encode a message (not its seq or delivery count: those are in keys and the counts tree).
pub(crate) fn encode(m: &StoredMessage) -> Vec<u8> {
    let msg = &m.message;
    let mut out = Vec::with_capacity(256 + msg.body.len());
    out.push(VERSION);
    for s in [
        m.routing_key.as_str(),
        &msg.message_id,
        &msg.receiver_gln,
        &msg.sender_gln,
        msg.family.as_str(),
        &msg.event,
        &msg.content_type,
    ] {
        put_bytes(&mut out, s.as_bytes());
    }
    out.extend_from_slice(&msg.timestamp.to_be_bytes());
    put_bytes(&mut out, msg.sha256.as_bytes());
    out.push(u8::from(msg.resend));
    put_bytes(&mut out, &msg.body);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| CodecError("u64"))?;
        Ok(u64::from_be_bytes(b))
    }
    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| CodecError("len"))?;
        let n = usize::try_from(u32::from_be_bytes(b)).map_err(|_| CodecError("len"))?;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, CodecError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| CodecError("not UTF-8"))
    }
}

/// Decode a message value stored under `seq`; its delivery count starts at 0.
pub(crate) fn decode(seq: u64, v: &[u8]) -> Result<StoredMessage, CodecError> {
    let mut r = Reader(v);
    if r.u8()? != VERSION {
        return Err(CodecError("unknown record version"));
    }
    let routing_key = r.string()?;
    let message_id = r.string()?;
    let receiver_gln = r.string()?;
    let sender_gln = r.string()?;
    let family = r
        .string()?
        .parse()
        .map_err(|_| CodecError("unknown family"))?;
    let event = r.string()?;
    let content_type = r.string()?;
    let timestamp = r.u64()?;
    let sha256 = r.string()?;
    let resend = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(CodecError("bad resend flag")),
    };
    let body = Bytes::copy_from_slice(r.bytes()?);
    if !r.0.is_empty() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(StoredMessage {
        seq,
        delivery_count: 0,
        routing_key,
        message: BusMessage {
            message_id,
            receiver_gln,
            sender_gln,
            family,
            event,
            content_type,
            timestamp,
            sha256,
            resend,
            body,
        },
    })
}

//! SPDY/3.1 framing, as far as Kubernetes' remotecommand needs it (`remote_command.rs` drives
//! the session): frames to and from bytes, and the client's header blocks.
//!
//! SPDY streams can be half-closed (a data frame with FIN), which the v4 websocket protocol of
//! Kubernetes 1.20 cannot do; that is why exec speaks SPDY.
//!
//! Header blocks are one zlib stream per direction, primed with the SPDY/3 dictionary. The client
//! never needs the server's headers (their blocks are skipped), and its own are written as
//! *stored* deflate blocks: a zlib header naming the dictionary (FDICT with its Adler-32), then per
//! frame one stored block with the pairs and an empty stored block, which is zlib's sync flush
//! marker. Without that marker Go's inflater keeps the bytes buffered and waits for more input.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// Flag of a data frame (and of SYN_STREAM, SYN_REPLY, HEADERS): the sender's last frame.
pub const FLAG_FIN: u8 = 0x01;
/// Largest payload a frame's 24-bit length field can carry.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;
const HEADER_LEN: usize = 8;
/// Most a frame header makes the decoder reserve ahead of the bytes that arrived: a peer that
/// announces a 16 MiB frame and sends nothing more costs this much, not the announced length.
const MAX_RESERVE_AHEAD: usize = 64 * 1024;
const STREAM_ID_MASK: u32 = 0x7fff_ffff;

pub type Result<T, E = SpdyError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY control frame of version {0} (only version 3 is spoken)")]
    UnsupportedVersion(u16),
    #[error("SPDY {frame} frame of {length} bytes is too short")]
    FrameTooShort { frame: &'static str, length: usize },
    #[error("SPDY data frame of {0} bytes exceeds the 24-bit length field")]
    FrameTooLarge(usize),
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
}

/// One SPDY/3 frame. Header blocks of frames from the server are not decoded (`SynReply`,
/// `Headers` keep only the stream and the FIN flag); `SynStream` carries plain pairs, which
/// [`Codec`] compresses when it writes the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings,
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame type this client does not know; SPDY says to ignore it.
    Unknown {
        frame_type: u16,
    },
}

/// Reads and writes frames on one connection; owns the client's header compression context.
#[derive(Debug, Default)]
pub struct Codec {
    headers: HeaderEncoder,
}

impl Decoder for Codec {
    type Item = Frame;
    type Error = SpdyError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let length = u32::from_be_bytes([0, src[5], src[6], src[7]]) as usize;
        if src.len() < HEADER_LEN + length {
            src.reserve((HEADER_LEN + length - src.len()).min(MAX_RESERVE_AHEAD));
            return Ok(None);
        }
        let first = src.get_u32();
        let flags = src.get_u8();
        src.advance(3);
        let mut payload = src.split_to(length).freeze();
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & STREAM_ID_MASK,
                fin,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::UnsupportedVersion(version));
        }
        let frame_type = (first & 0xffff) as u16;
        let need = |frame: &'static str, minimum: usize| {
            if length < minimum {
                Err(SpdyError::FrameTooShort { frame, length })
            } else {
                Ok(())
            }
        };
        let frame = match frame_type {
            TYPE_SYN_STREAM => {
                // A server-initiated stream: remotecommand never opens one; it is refused.
                need("SYN_STREAM", 10)?;
                Frame::SynStream {
                    stream_id: payload.get_u32() & STREAM_ID_MASK,
                    fin,
                    headers: Vec::new(),
                }
            }
            TYPE_SYN_REPLY => {
                need("SYN_REPLY", 4)?;
                Frame::SynReply {
                    stream_id: payload.get_u32() & STREAM_ID_MASK,
                    fin,
                }
            }
            TYPE_RST_STREAM => {
                need("RST_STREAM", 8)?;
                Frame::RstStream {
                    stream_id: payload.get_u32() & STREAM_ID_MASK,
                    status: payload.get_u32(),
                }
            }
            TYPE_SETTINGS => Frame::Settings,
            TYPE_PING => {
                need("PING", 4)?;
                Frame::Ping {
                    id: payload.get_u32(),
                }
            }
            TYPE_GOAWAY => {
                need("GOAWAY", 8)?;
                Frame::GoAway {
                    last_good_stream_id: payload.get_u32() & STREAM_ID_MASK,
                    status: payload.get_u32(),
                }
            }
            TYPE_HEADERS => {
                need("HEADERS", 4)?;
                Frame::Headers {
                    stream_id: payload.get_u32() & STREAM_ID_MASK,
                    fin,
                }
            }
            TYPE_WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8)?;
                Frame::WindowUpdate {
                    stream_id: payload.get_u32() & STREAM_ID_MASK,
                    delta: payload.get_u32() & STREAM_ID_MASK,
                }
            }
            frame_type => Frame::Unknown { frame_type },
        };
        Ok(Some(frame))
    }
}

impl Encoder<Frame> for Codec {
    type Error = SpdyError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<()> {
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(SpdyError::FrameTooLarge(data.len()));
                }
                dst.reserve(HEADER_LEN + data.len());
                dst.put_u32(stream_id & STREAM_ID_MASK);
                put_flags_and_length(dst, fin_flag(fin), data.len());
                dst.put_slice(&data);
            }
            Frame::SynStream {
                stream_id,
                fin,
                headers,
            } => {
                let block = self.headers.encode(&headers);
                let mut payload = BytesMut::with_capacity(10 + block.len());
                payload.put_u32(stream_id & STREAM_ID_MASK);
                payload.put_u32(0); // associated-to stream
                payload.put_u8(0); // priority (3 bits) and unused bits
                payload.put_u8(0); // credential slot
                payload.put_slice(&block);
                put_control(dst, TYPE_SYN_STREAM, fin_flag(fin), &payload);
            }
            Frame::SynReply { stream_id, fin } => {
                let block = self.headers.encode(&[]);
                let mut payload = BytesMut::with_capacity(4 + block.len());
                payload.put_u32(stream_id & STREAM_ID_MASK);
                payload.put_slice(&block);
                put_control(dst, TYPE_SYN_REPLY, fin_flag(fin), &payload);
            }
            Frame::RstStream { stream_id, status } => {
                let mut payload = [0u8; 8];
                payload[..4].copy_from_slice(&(stream_id & STREAM_ID_MASK).to_be_bytes());
                payload[4..].copy_from_slice(&status.to_be_bytes());
                put_control(dst, TYPE_RST_STREAM, 0, &payload);
            }
            Frame::Settings => put_control(dst, TYPE_SETTINGS, 0, &0u32.to_be_bytes()),
            Frame::Ping { id } => put_control(dst, TYPE_PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut payload = [0u8; 8];
                payload[..4].copy_from_slice(&(last_good_stream_id & STREAM_ID_MASK).to_be_bytes());
                payload[4..].copy_from_slice(&status.to_be_bytes());
                put_control(dst, TYPE_GOAWAY, 0, &payload);
            }
            Frame::Headers { stream_id, fin } => {
                let block = self.headers.encode(&[]);
                let mut payload = BytesMut::with_capacity(4 + block.len());
                payload.put_u32(stream_id & STREAM_ID_MASK);
                payload.put_slice(&block);
                put_control(dst, TYPE_HEADERS, fin_flag(fin), &payload);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut payload = [0u8; 8];
                payload[..4].copy_from_slice(&(stream_id & STREAM_ID_MASK).to_be_bytes());
                payload[4..].copy_from_slice(&(delta & STREAM_ID_MASK).to_be_bytes());
                put_control(dst, TYPE_WINDOW_UPDATE, 0, &payload);
            }
            Frame::Unknown { frame_type } => put_control(dst, frame_type, 0, &[]),
        }
        Ok(())
    }
}

fn put_flags_and_length(dst: &mut BytesMut, flags: u8, length: usize) {
    dst.put_u8(flags);
    dst.put_slice(&(length as u32).to_be_bytes()[1..]);
}

fn put_control(dst: &mut BytesMut, frame_type: u16, flags: u8, payload: &[u8]) {
    dst.reserve(HEADER_LEN + payload.len());
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(frame_type);
    put_flags_and_length(dst, flags, payload.len());
    dst.put_slice(payload);
}

/// The client's side of the header compression context: a zlib stream that only ever holds
/// stored blocks, so it needs no compressor and stays readable by any inflater primed with
/// [`dictionary`].
#[derive(Debug, Default)]
pub struct HeaderEncoder {
    started: bool,
}

impl HeaderEncoder {
    /// The next piece of the zlib stream, carrying `pairs` (names must be lowercase).
    pub fn encode(&mut self, pairs: &[(String, String)]) -> Vec<u8> {
        let plain = header_block(pairs);
        let mut out = Vec::with_capacity(plain.len() + 16);
        if !self.started {
            self.started = true;
            // CMF 0x78: deflate, 32 KiB window. FLG 0xbb: FDICT set, check bits so that
            // (CMF << 8 | FLG) is a multiple of 31.
            out.extend_from_slice(&[0x78, 0xbb]);
            out.extend_from_slice(&adler32(&dictionary()).to_be_bytes());
        }
        for chunk in plain.chunks(u16::MAX as usize) {
            put_stored_block(&mut out, chunk);
        }
        // The sync flush marker: makes the peer's inflater hand out what it has.
        put_stored_block(&mut out, &[]);
        out
    }
}

/// A non-final stored deflate block (BFINAL 0, BTYPE 00, byte-aligned), at most 65535 bytes.
fn put_stored_block(out: &mut Vec<u8>, data: &[u8]) {
    let length = data.len() as u16;
    out.push(0);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&(!length).to_le_bytes());
    out.extend_from_slice(data);
}

/// The uncompressed header block: the number of pairs, then each name and value with a 32-bit
/// length.
pub fn header_block(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
    for (name, value) in pairs {
        for text in [name, value] {
            out.extend_from_slice(&(text.len() as u32).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
    out
}

/// Adler-32 (RFC 1950), the checksum a zlib header uses to name its preset dictionary.
pub fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 bytes is the most that can be summed before `b` could overflow 32 bits.
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Words of the SPDY/3 header dictionary (draft 3, section 2.6.10.1), each preceded by its
/// 32-bit length in the dictionary.
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The rest of the SPDY/3 dictionary, plain text without lengths.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 header compression dictionary (1423 bytes).
pub fn dictionary() -> Vec<u8> {
    let mut out = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        out.extend_from_slice(&(word.len() as u32).to_be_bytes());
        out.extend_from_slice(word.as_bytes());
    }
    out.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(frame: Frame) -> BytesMut {
        let mut out = BytesMut::new();
        Codec::default().encode(frame, &mut out).unwrap();
        out
    }

    /// Inflates a zlib stream made only of stored blocks, checking the header and the dictionary
    /// id; returns the payload of each block in order.
    fn inflate_stored(mut stream: &[u8]) -> Vec<Vec<u8>> {
        assert_eq!(stream[0] & 0x0f, 8, "deflate method");
        assert_eq!((u16::from(stream[0]) << 8 | u16::from(stream[1])) % 31, 0);
        assert_ne!(stream[1] & 0x20, 0, "FDICT set");
        assert_eq!(
            u32::from_be_bytes(stream[2..6].try_into().unwrap()),
            adler32(&dictionary())
        );
        stream = &stream[6..];
        let mut blocks = Vec::new();
        while !stream.is_empty() {
            assert_eq!(stream[0], 0, "non-final stored block");
            let length = u16::from_le_bytes([stream[1], stream[2]]);
            let complement = u16::from_le_bytes([stream[3], stream[4]]);
            assert_eq!(length, !complement);
            let end = 5 + length as usize;
            blocks.push(stream[5..end].to_vec());
            stream = &stream[end..];
        }
        blocks
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let dictionary = dictionary();
        assert_eq!(dictionary.len(), 1423);
        assert_eq!(&dictionary[..11], b"\0\0\0\x07options");
        assert!(dictionary.ends_with(b"utf-,*,enq=0."));
        // The id Go's zlib reader checks (`ErrDictionary` otherwise); accepted by a v1.20
        // apiserver and kubelet.
        assert_eq!(adler32(&dictionary), 0xe3c6_a7c2);
    }

    #[test]
    fn adler32_known_values() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        let long = vec![0xffu8; 100_000];
        let (mut a, mut b) = (1u64, 0u64);
        for &byte in &long {
            a = (a + u64::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(adler32(&long), ((b << 16) | a) as u32);
    }

    #[test]
    fn header_blocks_continue_one_zlib_stream() {
        let mut encoder = HeaderEncoder::default();
        let pairs = vec![("streamtype".to_string(), "error".to_string())];
        let mut stream = encoder.encode(&pairs);
        let second = encoder.encode(&[("streamtype".into(), "stdin".into())]);
        assert_eq!(second[0], 0, "later blocks carry no zlib header");
        stream.extend_from_slice(&second);
        let blocks = inflate_stored(&stream);
        assert_eq!(blocks.len(), 4);
        assert_eq!(blocks[0], header_block(&pairs));
        assert!(
            blocks[1].is_empty() && blocks[3].is_empty(),
            "sync flush markers"
        );
        let mut expected = vec![0, 0, 0, 1, 0, 0, 0, 10];
        expected.extend_from_slice(b"streamtype");
        expected.extend_from_slice(&[0, 0, 0, 5]);
        expected.extend_from_slice(b"stdin");
        assert_eq!(blocks[2], expected);
    }

    #[test]
    fn large_header_blocks_split_into_stored_blocks() {
        let pairs = vec![("x".to_string(), "v".repeat(70_000))];
        let blocks = inflate_stored(&HeaderEncoder::default().encode(&pairs));
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0].len(), 65535);
        assert_eq!(
            [&blocks[0][..], &blocks[1][..]].concat(),
            header_block(&pairs)
        );
    }

    #[test]
    fn data_frame_layout_and_round_trip() {
        let frame = Frame::Data {
            stream_id: 3,
            fin: true,
            data: Bytes::from_static(b"hi"),
        };
        let mut bytes = encode(frame.clone());
        assert_eq!(&bytes[..], &[0, 0, 0, 3, 1, 0, 0, 2, b'h', b'i']);
        assert_eq!(Codec::default().decode(&mut bytes).unwrap(), Some(frame));
        assert!(bytes.is_empty());
    }

    #[test]
    fn syn_stream_layout() {
        let bytes = encode(Frame::SynStream {
            stream_id: 5,
            fin: false,
            headers: vec![("streamtype".into(), "stdout".into())],
        });
        assert_eq!(&bytes[..4], &[0x80, 0x03, 0x00, 0x01]);
        let length = u32::from_be_bytes([0, bytes[5], bytes[6], bytes[7]]) as usize;
        assert_eq!(bytes.len(), 8 + length);
        assert_eq!(&bytes[8..18], &[0, 0, 0, 5, 0, 0, 0, 0, 0, 0]);
        let blocks = inflate_stored(&bytes[18..]);
        assert_eq!(
            blocks[0],
            header_block(&[("streamtype".into(), "stdout".into())])
        );
    }

    #[test]
    fn control_frames_round_trip() {
        for frame in [
            Frame::Ping { id: 7 },
            Frame::RstStream {
                stream_id: 1,
                status: 5,
            },
            Frame::GoAway {
                last_good_stream_id: 7,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 65536,
            },
            Frame::SynReply {
                stream_id: 9,
                fin: true,
            },
            Frame::Headers {
                stream_id: 9,
                fin: false,
            },
        ] {
            let mut bytes = encode(frame.clone());
            assert_eq!(Codec::default().decode(&mut bytes).unwrap(), Some(frame));
            assert!(bytes.is_empty());
        }
    }

    #[test]
    fn decoder_waits_for_whole_frames() {
        let mut all = encode(Frame::Data {
            stream_id: 5,
            fin: false,
            data: Bytes::from_static(b"hello"),
        });
        all.extend_from_slice(&encode(Frame::Ping { id: 2 }));
        let mut codec = Codec::default();
        let mut input = BytesMut::new();
        let mut frames = Vec::new();
        for byte in all {
            input.put_u8(byte);
            if let Some(frame) = codec.decode(&mut input).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1], Frame::Ping { id: 2 });
    }

    #[test]
    fn server_syn_reply_header_block_is_skipped() {
        // A SYN_REPLY as kubelet sends it: stream id, then a compressed block we do not read.
        let mut bytes = BytesMut::new();
        put_control(
            &mut bytes,
            TYPE_SYN_REPLY,
            0,
            &[0, 0, 0, 1, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2],
        );
        assert_eq!(
            Codec::default().decode(&mut bytes).unwrap(),
            Some(Frame::SynReply {
                stream_id: 1,
                fin: false
            })
        );
    }

    #[test]
    fn announced_length_does_not_allocate_ahead_of_the_data() {
        let mut bytes = BytesMut::from(&[0, 0, 0, 1, 0, 0xff, 0xff, 0xff, 1, 2, 3][..]);
        assert_eq!(Codec::default().decode(&mut bytes).unwrap(), None);
        assert!(
            bytes.capacity() <= 2 * MAX_RESERVE_AHEAD,
            "{}",
            bytes.capacity()
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn stream_id() -> impl Strategy<Value = u32> {
            0..=STREAM_ID_MASK
        }

        /// Frames whose encoding decodes to the same value (a `SynStream`'s headers are not read
        /// back, and an `Unknown` type must not be a known one).
        fn round_trip_frame() -> impl Strategy<Value = Frame> {
            prop_oneof![
                (
                    stream_id(),
                    any::<bool>(),
                    prop::collection::vec(any::<u8>(), 0..2048)
                )
                    .prop_map(|(stream_id, fin, data)| Frame::Data {
                        stream_id,
                        fin,
                        data: Bytes::from(data),
                    }),
                (stream_id(), any::<bool>())
                    .prop_map(|(stream_id, fin)| Frame::SynReply { stream_id, fin }),
                (stream_id(), any::<u32>())
                    .prop_map(|(stream_id, status)| Frame::RstStream { stream_id, status }),
                Just(Frame::Settings),
                any::<u32>().prop_map(|id| Frame::Ping { id }),
                (stream_id(), any::<u32>()).prop_map(|(last_good_stream_id, status)| {
                    Frame::GoAway {
                        last_good_stream_id,
                        status,
                    }
                }),
                (stream_id(), any::<bool>())
                    .prop_map(|(stream_id, fin)| Frame::Headers { stream_id, fin }),
                (stream_id(), stream_id())
                    .prop_map(|(stream_id, delta)| Frame::WindowUpdate { stream_id, delta }),
                (10u16..).prop_map(|frame_type| Frame::Unknown { frame_type }),
            ]
        }

        proptest! {
            #![proptest_config(crate::proptest_cases::config(256))]

            /// Hostile bytes, fed in arbitrary pieces: frames or errors, never a panic, and the
            /// buffer never grows far beyond what arrived.
            #[test]
            fn arbitrary_bytes_never_panic_or_over_allocate(
                input in prop::collection::vec(any::<u8>(), 0..4096),
                cuts in prop::collection::vec(1usize..512, 1..16),
            ) {
                let mut codec = Codec::default();
                let mut buffer = BytesMut::new();
                let mut rest = &input[..];
                let mut cut = cuts.iter().cycle();
                'feed: while !rest.is_empty() {
                    let take = (*cut.next().unwrap()).min(rest.len());
                    buffer.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    loop {
                        match codec.decode(&mut buffer) {
                            Ok(Some(_)) => continue,
                            Ok(None) => break,
                            Err(_) => break 'feed,
                        }
                    }
                    prop_assert!(
                        buffer.capacity() <= 2 * input.len() + 4 * MAX_RESERVE_AHEAD,
                        "{} bytes reserved for {} received", buffer.capacity(), input.len()
                    );
                }
            }

            /// A server's header block is skipped, never inflated, however it is built (a
            /// decompression bomb costs nothing).
            #[test]
            fn server_header_blocks_are_never_inflated(
                stream in stream_id(),
                block in prop::collection::vec(any::<u8>(), 0..1024),
                headers_frame in any::<bool>(),
            ) {
                let mut bytes = BytesMut::new();
                let mut payload = stream.to_be_bytes().to_vec();
                payload.extend_from_slice(&block);
                let frame_type = if headers_frame { TYPE_HEADERS } else { TYPE_SYN_REPLY };
                put_control(&mut bytes, frame_type, 0, &payload);
                let frame = Codec::default().decode(&mut bytes).unwrap().unwrap();
                let expected = if headers_frame {
                    Frame::Headers { stream_id: stream, fin: false }
                } else {
                    Frame::SynReply { stream_id: stream, fin: false }
                };
                prop_assert_eq!(frame, expected);
                prop_assert!(bytes.is_empty());
            }

            #[test]
            fn frames_round_trip_whatever_the_read_boundaries(
                frames in prop::collection::vec(round_trip_frame(), 1..8),
                cut in 1usize..64,
            ) {
                let mut codec = Codec::default();
                let mut wire = BytesMut::new();
                for frame in &frames {
                    codec.encode(frame.clone(), &mut wire).unwrap();
                }
                let mut decoded = Vec::new();
                let mut buffer = BytesMut::new();
                for piece in wire.chunks(cut) {
                    buffer.extend_from_slice(piece);
                    while let Some(frame) = codec.decode(&mut buffer).unwrap() {
                        decoded.push(frame);
                    }
                }
                prop_assert_eq!(decoded, frames);
                prop_assert!(buffer.is_empty());
            }
        }
    }

    #[test]
    fn other_versions_and_short_frames_are_errors() {
        let mut bytes = BytesMut::from(&[0x80, 0x02, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(
            Codec::default().decode(&mut bytes),
            Err(SpdyError::UnsupportedVersion(2))
        ));
        let mut bytes = BytesMut::from(&[0x80, 0x03, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(
            Codec::default().decode(&mut bytes),
            Err(SpdyError::FrameTooShort { .. })
        ));
    }
}

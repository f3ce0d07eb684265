//! What the running kernel's BTF (`/sys/kernel/btf/vmlinux`) tells the loader: the id of
//! a kfunc, and where a bitfield of a kernel struct lies. Only as much of the format as
//! that needs is read (types and strings; see the kernel's Documentation/bpf/btf.rst).

use std::path::Path;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Why a BTF blob could not be read.
#[derive(Debug, thiserror::Error)]
#[error("BTF: {0}")]
pub struct BtfError(String);

/// One type: its kind, name (an offset into the strings) and, for structs and unions,
/// members as (name, type id, bit offset, bitfield size: 0 for a whole member).
struct Type {
    kind: u32,
    name: u32,
    members: Vec<(u32, u32, u32, u32)>,
}

/// The types of a BTF blob, by id (id 0 is `void` and has no entry), and its strings.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

/// Where a bitfield lies: the byte holding it and its lowest bit in that byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bitfield {
    pub byte: u32,
    pub shift: u32,
}

impl Btf {
    /// The running kernel's BTF.
    pub fn vmlinux() -> Result<Btf, BtfError> {
        Btf::read(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn read(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path)
            .map_err(|e| BtfError(format!("cannot read {}: {e}", path.display())))?;
        Btf::parse(&data)
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let cut = || BtfError("cut short".to_owned());
        let u32_at = |at: usize| -> Result<u32, BtfError> {
            let bytes = data.get(at..at + 4).ok_or_else(cut)?;
            Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        };
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError("not a little-endian BTF blob".to_owned()));
        }
        let header_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let strings = data
            .get(header_len + str_off..header_len + str_off + str_len)
            .ok_or_else(cut)?
            .to_vec();
        let (mut at, end) = (header_len + type_off, header_len + type_off + type_len);
        let mut types = Vec::new();
        while at < end {
            let (name_off, info) = (u32_at(at)?, u32_at(at + 4)?);
            let (kind, vlen, kind_flag) = ((info >> 24) & 0x1f, info & 0xffff, info >> 31);
            at += 12;
            let mut members = Vec::new();
            at += match kind {
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen as usize {
                        let m = at + 12 * i;
                        let (offset, size) = match (u32_at(m + 8)?, kind_flag) {
                            (offset, 1) => (offset & 0xff_ffff, offset >> 24),
                            (offset, _) => (offset, 0),
                        };
                        members.push((u32_at(m)?, u32_at(m + 4)?, offset, size));
                    }
                    12 * vlen as usize
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                // Its size unknown, nothing after it can be found.
                _ => return Err(BtfError(format!("unknown type kind {kind}"))),
            };
            types.push(Type {
                kind,
                name: name_off,
                members,
            });
        }
        Ok(Btf { types, strings })
    }

    /// The name at `off` in the strings (empty past their end).
    fn name(&self, off: u32) -> &[u8] {
        let tail = self.strings.get(off as usize..).unwrap_or_default();
        &tail[..tail.iter().position(|&b| b == 0).unwrap_or(tail.len())]
    }

    /// The id of the first type of `kind` named `name`.
    fn id_of(&self, kind: u32, name: &str) -> Option<u32> {
        let at = self
            .types
            .iter()
            .position(|t| t.kind == kind && self.name(t.name) == name.as_bytes())?;
        Some(at as u32 + 1)
    }

    /// The id of the function (a kfunc, say) named `name`.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.id_of(KIND_FUNC, name)
    }

    /// Where the bitfield `member` of `struct name` lies, looking through the anonymous
    /// structs and unions it may sit in; `None` if it is not there, not a bitfield, or
    /// spans two bytes.
    pub fn bitfield(&self, name: &str, member: &str) -> Option<Bitfield> {
        let id = self.id_of(KIND_STRUCT, name)?;
        let (bit, size) = self.find_member(id, member, 0)?;
        (size > 0 && bit % 8 + size <= 8).then_some(Bitfield {
            byte: bit / 8,
            shift: bit % 8,
        })
    }

    /// `member`'s bit offset (from `base`) and bitfield size, in the struct or union `id`.
    fn find_member(&self, id: u32, member: &str, base: u32) -> Option<(u32, u32)> {
        let ty = self.types.get(id.checked_sub(1)? as usize)?;
        for &(name, type_id, offset, size) in &ty.members {
            let name = self.name(name);
            if name == member.as_bytes() {
                return Some((base + offset, size));
            }
            let inner = self.types.get(type_id.checked_sub(1)? as usize)?;
            if name.is_empty()
                && (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                && self.name(inner.name).is_empty()
                && let Some(found) = self.find_member(type_id, member, base + offset)
            {
                return Some(found);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob as the kernel lays it out: header, types, strings.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let type_bytes: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend(MAGIC.to_le_bytes());
        out.extend([1, 0]);
        for word in [
            24,
            0,
            type_bytes.len() as u32,
            type_bytes.len() as u32,
            strings.len() as u32,
        ] {
            out.extend(word.to_le_bytes());
        }
        out.extend(type_bytes);
        out.extend(strings);
        out
    }

    /// struct sk_buff { u32 len; union { struct { u8 pkt_type:3, ip_summed:2; }; }; },
    /// plus a function, as in vmlinux (the bitfields inside anonymous members).
    #[test]
    fn finds_a_kfunc_and_a_bitfield_inside_anonymous_members() {
        // Strings: 0 "", 1 "sk_buff", 9 "len", 13 "pkt_type", 22 "ip_summed", 32 "u8",
        // 35 "bpf_cast_to_kern_ctx".
        let strings = b"\0sk_buff\0len\0pkt_type\0ip_summed\0u8\0bpf_cast_to_kern_ctx\0";
        let kind = |k: u32, vlen: u32, flag: u32| flag << 31 | k << 24 | vlen;
        let types = [
            // 1: u8
            32,
            kind(KIND_INT, 0, 0),
            1,
            8,
            // 2: the anonymous struct of bitfields (at bits 8*20 + 0 and + 3)
            0,
            kind(KIND_STRUCT, 2, 1),
            1,
            13,
            1,
            3 << 24, // pkt_type:3 at bit 0
            22,
            1,
            2 << 24 | 3, // ip_summed:2 at bit 3
            // 3: the anonymous union around it
            0,
            kind(KIND_UNION, 1, 0),
            1,
            0,
            2,
            0,
            // 4: struct sk_buff
            1,
            kind(KIND_STRUCT, 2, 0),
            24,
            9,
            1,
            0, // len (as if u8; only the offsets matter)
            0,
            3,
            160, // the union at byte 20
            // 5: a function prototype, 6: the function
            0,
            kind(KIND_FUNC_PROTO, 0, 0),
            0,
            35,
            kind(KIND_FUNC, 0, 0),
            5,
        ];
        let btf = Btf::parse(&blob(&types, strings)).expect("parses");
        assert_eq!(btf.func_id("bpf_cast_to_kern_ctx"), Some(6));
        assert_eq!(btf.func_id("nothing"), None);
        assert_eq!(
            btf.bitfield("sk_buff", "ip_summed"),
            Some(Bitfield { byte: 20, shift: 3 })
        );
        // Not a bitfield, or not there.
        assert_eq!(btf.bitfield("sk_buff", "len"), None);
        assert_eq!(btf.bitfield("sk_buff", "csum"), None);
        assert_eq!(btf.bitfield("nothing", "ip_summed"), None);
    }

    #[test]
    fn refuses_what_is_not_btf() {
        assert!(Btf::parse(b"not btf at all, not even close").is_err());
        let mut cut = blob(&[1, KIND_INT << 24, 1, 8], b"\0");
        cut.truncate(30);
        assert!(Btf::parse(&cut).is_err());
        // A kind this reader does not know: its size unknown, the rest cannot be read.
        assert!(Btf::parse(&blob(&[0, 25 << 24, 0], b"\0")).is_err());
    }

    /// The running kernel's BTF, where it has one: read whole, with the kfunc and the
    /// bitfield the tc programs need.
    #[test]
    fn reads_this_kernels_btf() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("no {}: nothing to read", path.display());
            return;
        }
        let btf = Btf::read(path).expect("this kernel's BTF parses");
        assert!(btf.func_id("bpf_cast_to_kern_ctx").is_some());
        let field = btf.bitfield("sk_buff", "ip_summed").expect("ip_summed");
        assert!(field.shift <= 6, "two bits in one byte: {field:?}");
    }
}

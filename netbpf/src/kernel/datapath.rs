//! Attaching netbpf's programs to interfaces and removing everything again.
//!
//! Links are pinned, so the datapath keeps running after the process exits. Attaching over
//! an existing pinned link swaps the program inside it (BPF_LINK_UPDATE): no packet sees
//! an interface without a program.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, SchedClassifier, TcAttachType, Xdp,
        XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, SchedClassifierLinkId},
        xdp::{XdpLink, XdpLinkId},
    },
};
use netbpf_common::{maps, stats::Hook};

use super::{object, pins::PinDir};
use crate::{Error, Result};

/// What attaching one hook did.
#[derive(Debug)]
pub struct Attached {
    pub hook: Hook,
    pub iface: String,
    pub link_pin: PathBuf,
    /// A pinned link existed and now runs the new program.
    pub replaced: bool,
}

/// What `remove_all` took away.
#[derive(Debug, Default)]
pub struct Removed {
    pub links: Vec<PathBuf>,
    pub maps: Vec<PathBuf>,
}

/// Loads the programs for `hooks` and attaches them to `iface` in the current network
/// namespace, pinning maps and links under `pins`. On failure, a pin directory this call
/// created is removed again.
pub fn attach(
    pins: &PinDir,
    iface: &str,
    netns_label: &str,
    hooks: &[Hook],
) -> Result<Vec<Attached>> {
    let c_iface = CString::new(iface).map_err(|_| Error::UnknownInterface {
        iface: iface.to_owned(),
        netns: netns_label.to_owned(),
    })?;
    // SAFETY: a NUL-terminated name; 0 means "no such interface".
    let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
    if ifindex == 0 {
        return Err(Error::UnknownInterface {
            iface: iface.to_owned(),
            netns: netns_label.to_owned(),
        });
    }

    let fresh = !pins.has_maps();
    let root_existed = pins.path().exists();
    pins.prepare()?;
    let result = attach_hooks(pins, ifindex, iface, hooks);
    if result.is_err() && fresh {
        // Best effort: leave nothing behind from a setup that never worked.
        let _ = remove_all(pins, !root_existed);
    }
    result
}

fn attach_hooks(pins: &PinDir, ifindex: u32, iface: &str, hooks: &[Hook]) -> Result<Vec<Attached>> {
    let mut loaded = Loaded::open(pins)?;
    // Attach everything first, pin only when all succeeded: an unpinned link detaches
    // when `loaded` drops, so a failure halfway leaves no new link behind.
    let mut pending = Vec::new();
    for &hook in hooks {
        let link_pin = pins.link(hook, iface);
        let (link, replaced) = loaded.attach_link(hook, ifindex, &link_pin)?;
        pending.push((hook, link_pin, link, replaced));
    }
    let mut attached = Vec::new();
    for (hook, link_pin, link, replaced) in pending {
        if !replaced {
            pin_link(link, &link_pin)?;
        }
        attached.push(Attached {
            hook,
            iface: iface.to_owned(),
            link_pin,
            replaced,
        });
    }
    Ok(attached)
}

fn pin_link(link: FdLink, link_pin: &Path) -> Result<()> {
    link.pin(link_pin).map(drop).map_err(|source| Error::Pin {
        path: link_pin.to_owned(),
        source,
    })
}

/// The kernel object with its maps pinned, each program loaded the first time it is
/// attached.
pub struct Loaded {
    ebpf: Ebpf,
    loaded: Vec<Hook>,
}

impl Loaded {
    pub fn open(pins: &PinDir) -> Result<Self> {
        Ok(Loaded {
            ebpf: object::open(Some(pins))?,
            loaded: Vec::new(),
        })
    }

    /// Attaches `hook`'s program to one interface and pins the link (or swaps the program
    /// inside the link already pinned there).
    pub fn attach(
        &mut self,
        pins: &PinDir,
        hook: Hook,
        ifindex: u32,
        iface: &str,
    ) -> Result<Attached> {
        let link_pin = pins.link(hook, iface);
        let (link, replaced) = self.attach_link(hook, ifindex, &link_pin)?;
        if !replaced {
            pin_link(link, &link_pin)?;
        }
        Ok(Attached {
            hook,
            iface: iface.to_owned(),
            link_pin,
            replaced,
        })
    }

    /// Attaches a socket program of `hook` to a cgroup (v2) and pins the link at
    /// `<hook>@cgroup`. A link pinned there before is replaced: the new one attaches
    /// first, then the old one goes (aya cannot update a cgroup link in place; for a moment
    /// both run, and the old finds the destination already translated).
    pub fn attach_cgroup(
        &mut self,
        pins: &PinDir,
        hook: Hook,
        cgroup: &fs::File,
    ) -> Result<Attached> {
        let name = hook.name();
        let load = !self.loaded.contains(&hook);
        let program = self
            .ebpf
            .program_mut(name)
            .ok_or(Error::MissingProgram(name))?;
        let prog_err = |source| Error::Program {
            program: name,
            source,
        };
        let prog: &mut CgroupSockAddr = program.try_into().map_err(prog_err)?;
        if load {
            prog.load().map_err(prog_err)?;
            self.loaded.push(hook);
        }
        // A bpf_link takes no attach flags (EINVAL otherwise); links coexist with other
        // programs on the cgroup anyway.
        let id = prog
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(prog_err)?;
        let link: FdLink = prog
            .take_link(id)
            .map_err(prog_err)?
            .try_into()
            .map_err(|source| Error::Link {
                path: pins.link(hook, "cgroup"),
                source,
            })?;
        let link_pin = pins.link(hook, "cgroup");
        let replaced = link_pin.exists();
        unpin_stale(&link_pin)?;
        pin_link(link, &link_pin)?;
        Ok(Attached {
            hook,
            iface: "cgroup".to_owned(),
            link_pin,
            replaced,
        })
    }

    /// Attaches one program, into the pinned link at `link_pin` if there is a live one.
    /// Returns the link (already pinned when replaced) and whether it replaced a program.
    fn attach_link(&mut self, hook: Hook, ifindex: u32, link_pin: &Path) -> Result<(FdLink, bool)> {
        let name = hook.name();
        let load = !self.loaded.contains(&hook);
        let program = self
            .ebpf
            .program_mut(name)
            .ok_or(Error::MissingProgram(name))?;
        let prog_err = |source| Error::Program {
            program: name,
            source,
        };
        let result = match hook {
            Hook::FromUplink | Hook::FromContainer => {
                let prog: &mut SchedClassifier = program.try_into().map_err(prog_err)?;
                attach_program(prog, load, ifindex, link_pin)
            }
            Hook::XdpUplink => {
                let prog: &mut Xdp = program.try_into().map_err(prog_err)?;
                attach_program(prog, load, ifindex, link_pin)
            }
            Hook::SockConnect4 | Hook::SockSendmsg4 | Hook::SockRecvmsg4 | Hook::SockPeername4 => {
                return Err(Error::Program {
                    program: name,
                    source: ProgramError::UnexpectedProgramType,
                });
            }
        };
        if load {
            self.loaded.push(hook);
        }
        result.map_err(|e| e.into_error(name, link_pin))
    }
}

/// What attaching needs from each kind of program netbpf puts on an interface.
trait InterfaceProgram {
    type Link: TryFrom<FdLink> + TryInto<FdLink, Error = LinkError>;
    type LinkId;
    fn load(&mut self) -> Result<(), ProgramError>;
    fn attach_to_interface(&mut self, ifindex: u32) -> Result<Self::LinkId, ProgramError>;
    fn attach_to_link(&mut self, link: Self::Link) -> Result<Self::LinkId, ProgramError>;
    fn take_link(&mut self, id: Self::LinkId) -> Result<Self::Link, ProgramError>;
}

impl InterfaceProgram for SchedClassifier {
    type Link = SchedClassifierLink;
    type LinkId = SchedClassifierLinkId;
    fn load(&mut self) -> Result<(), ProgramError> {
        SchedClassifier::load(self)
    }
    fn attach_to_interface(&mut self, ifindex: u32) -> Result<Self::LinkId, ProgramError> {
        self.attach(ifindex, TcAttachType::Ingress)
    }
    fn attach_to_link(&mut self, link: Self::Link) -> Result<Self::LinkId, ProgramError> {
        SchedClassifier::attach_to_link(self, link)
    }
    fn take_link(&mut self, id: Self::LinkId) -> Result<Self::Link, ProgramError> {
        SchedClassifier::take_link(self, id)
    }
}

impl InterfaceProgram for Xdp {
    type Link = XdpLink;
    type LinkId = XdpLinkId;
    fn load(&mut self) -> Result<(), ProgramError> {
        Xdp::load(self)
    }
    fn attach_to_interface(&mut self, ifindex: u32) -> Result<Self::LinkId, ProgramError> {
        self.attach(ifindex, XdpMode::Default)
    }
    fn attach_to_link(&mut self, link: Self::Link) -> Result<Self::LinkId, ProgramError> {
        Xdp::attach_to_link(self, link)
    }
    fn take_link(&mut self, id: Self::LinkId) -> Result<Self::Link, ProgramError> {
        Xdp::take_link(self, id)
    }
}

/// Why attaching one program failed, before it is given the program's name.
enum AttachError {
    Program(ProgramError),
    Link(LinkError),
    Other(Error),
}

impl AttachError {
    fn into_error(self, program: &'static str, link_pin: &Path) -> Error {
        match self {
            AttachError::Program(source) => Error::Program { program, source },
            AttachError::Link(source) => Error::Link {
                path: link_pin.to_owned(),
                source,
            },
            AttachError::Other(e) => e,
        }
    }
}

fn attach_program<P: InterfaceProgram>(
    prog: &mut P,
    load: bool,
    ifindex: u32,
    link_pin: &Path,
) -> Result<(FdLink, bool), AttachError> {
    if load {
        prog.load().map_err(AttachError::Program)?;
    }
    let existing = open_pinned_link(link_pin).map_err(AttachError::Other)?;
    let mut replaced = false;
    let id = match existing.and_then(|l| P::Link::try_from(l).ok()) {
        Some(old) => match prog.attach_to_link(old) {
            Ok(id) => {
                replaced = true;
                id
            }
            // The link's interface is gone (the link is defunct): attach anew. Any other
            // failure leaves the pinned link, and the program in it, as they were.
            Err(e) if is_defunct_link(&e) => {
                unpin_stale(link_pin).map_err(AttachError::Other)?;
                prog.attach_to_interface(ifindex)
                    .map_err(AttachError::Program)?
            }
            Err(e) => return Err(AttachError::Program(e)),
        },
        None => prog
            .attach_to_interface(ifindex)
            .map_err(AttachError::Program)?,
    };
    let link = prog.take_link(id).map_err(AttachError::Program)?;
    let link: FdLink = link.try_into().map_err(AttachError::Link)?;
    Ok((link, replaced))
}

/// BPF_LINK_UPDATE on a tcx or XDP link whose device was removed fails with ENOLINK.
fn is_defunct_link(e: &ProgramError) -> bool {
    matches!(e, ProgramError::SyscallError(sys) if sys.io_error.raw_os_error() == Some(libc::ENOLINK))
}

fn open_pinned_link(path: &Path) -> Result<Option<FdLink>> {
    if !path.exists() {
        return Ok(None);
    }
    PinnedLink::from_pin(path)
        .map(|link| Some(FdLink::from(link)))
        .map_err(|source| Error::Link {
            path: path.to_owned(),
            source,
        })
}

fn unpin_stale(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            format!("removing stale link {}", path.display()),
            e,
        )),
    }
}

/// Detaches every pinned link and unpins every map netbpf made, then removes the layout
/// (and the pin directory itself if `remove_root`). Links go first, so no program is left
/// running against a map that is being removed. Goes on past errors and reports them all.
pub fn remove_all(pins: &PinDir, remove_root: bool) -> Result<Removed> {
    let mut removed = Removed::default();
    let mut errors = Vec::new();
    for path in pins.pinned_links()? {
        if !is_netbpf_link_pin(&path) {
            continue;
        }
        // Unpinning drops the last reference: the kernel detaches the link.
        let result = match PinnedLink::from_pin(&path) {
            Ok(link) => link
                .unpin()
                .map(drop)
                .map_err(|e| Error::io(format!("unpinning {}", path.display()), e)),
            // A pin that is no link (or unreadable): remove the file so the directory can go.
            Err(_) => unpin_stale(&path),
        };
        match result {
            Ok(()) => removed.links.push(path),
            Err(e) => errors.push(e.to_string()),
        }
    }
    for name in maps::ALL {
        let path = pins.map(name);
        match fs::remove_file(&path) {
            Ok(()) => removed.maps.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("unpinning {}: {e}", path.display())),
        }
    }
    if let Err(e) = pins.remove_layout(remove_root) {
        errors.push(e.to_string());
    }
    if !errors.is_empty() {
        return Err(Error::Incomplete(errors.join("; ")));
    }
    Ok(removed)
}

/// Pins netbpf makes are named `<hook>@<interface>`; anything else is left alone.
fn is_netbpf_link_pin(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split_once('@'))
        .is_some_and(|(hook, _)| Hook::ALL.iter().any(|h| h.name() == hook))
}

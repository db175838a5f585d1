//! Container processes: started in the task's network namespace and a mount namespace of
//! their own (where the volumes are bind-mounted), found again by that mount namespace.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A namespace's identity: the (device, inode) of its `/proc/<pid>/ns/*` file.
pub type NsId = (u64, u64);

#[derive(Debug, Clone)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub mounts: Vec<Mount>,
}

pub struct Started {
    pub child: tokio::process::Child,
    pub pid: i32,
    /// Held open so the namespace (and so its inode) outlives the processes while the
    /// daemon still compares against it; also the fd health probes enter.
    pub mnt_ns: Option<File>,
    pub mnt_id: Option<NsId>,
}

fn cstring(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

struct PreparedMount {
    source: CString,
    target: CString,
    read_only: bool,
}

fn fail() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Starts the container's main process, its output appended to `log`.
pub fn spawn(spec: &Spec, netns: &File, log: &Path) -> std::io::Result<Started> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    for m in &spec.mounts {
        std::fs::create_dir_all(&m.target)?;
    }
    // Docker creates a missing workingDirectory; one inside a volume is the volume's business.
    if !spec.mounts.iter().any(|m| spec.cwd.starts_with(&m.target)) {
        std::fs::create_dir_all(&spec.cwd)?;
    }
    let mounts: Vec<PreparedMount> = spec
        .mounts
        .iter()
        .map(|m| {
            Ok(PreparedMount {
                source: cstring(&m.source)?,
                target: cstring(&m.target)?,
                read_only: m.read_only,
            })
        })
        .collect::<std::io::Result<_>>()?;
    let cwd = cstring(&spec.cwd)?;
    let root = CString::from(c"/");
    let net_fd = netns.as_raw_fd();
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls on
    // memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(net_fd, libc::CLONE_NEWNET) != 0 {
                return Err(fail());
            }
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(fail());
            }
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return Err(fail());
            }
            for m in &mounts {
                if libc::mount(
                    m.source.as_ptr(),
                    m.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(fail());
                }
                if m.read_only
                    && libc::mount(
                        std::ptr::null(),
                        m.target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(fail());
                }
            }
            // After the mounts, so a workingDirectory inside a volume is the volume.
            if libc::chdir(cwd.as_ptr()) != 0 {
                return Err(fail());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    // spawn returns after exec, so the child is already in its own mount namespace; if it
    // has exited already there is nothing left to find by it.
    let mnt_ns = File::open(format!("/proc/{pid}/ns/mnt")).ok();
    let mnt_id = mnt_ns.as_ref().and_then(|f| ns_id_of(f).ok());
    Ok(Started {
        child,
        pid,
        mnt_ns,
        mnt_id,
    })
}

pub fn ns_id_of(f: &File) -> std::io::Result<NsId> {
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// A health probe: the container's environment and working directory, entered into its
/// network and mount namespaces. Output is captured; the probe leads its own process group
/// so that a timeout can kill all of it.
pub fn probe_command(
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
    netns: RawFd,
    mntns: RawFd,
) -> std::io::Result<tokio::process::Command> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty health check"))?;
    let cwd = cstring(cwd)?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: raw syscalls only, on fds and a string prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(netns, libc::CLONE_NEWNET) != 0 {
                return Err(fail());
            }
            if libc::setns(mntns, libc::CLONE_NEWNS) != 0 {
                return Err(fail());
            }
            if libc::chdir(cwd.as_ptr()) != 0 {
                return Err(fail());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Every process whose `kind` namespace (`mnt`, `net`) is `id`.
pub fn pids_in_ns(kind: &str, id: NsId) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
                .is_ok_and(|m| (m.dev(), m.ino()) == id)
        })
        .collect()
}

/// SIGKILLs every process of the container, including those that left its process group.
pub fn kill_all(mnt_id: NsId) -> usize {
    let pids = pids_in_ns("mnt", mnt_id);
    for &pid in &pids {
        // SAFETY: kill has no memory effects; a pid that just exited is harmless.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    pids.len()
}

pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Docker's exit codes: the code, or 128 + the signal that killed the process.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

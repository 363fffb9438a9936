//! A tiny tmpfs mounted for one test: a disk that fills up, or turns read-only, under a
//! running hoard. Mounting needs root (CAP_SYS_ADMIN); without it the tests that use this say
//! so and skip, unless `HOARD_REQUIRE_MOUNT=1` (set by `.ci/run`) makes that a failure.

use std::path::Path;
use std::process::Command;

pub(crate) struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// A `size` tmpfs (`"1m"`), or `None` where this machine does not let tests mount.
    pub(crate) fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map(|out| out.status.success())
            .unwrap_or(false);
        if mounted {
            return Some(SmallDisk { dir });
        }
        assert!(
            std::env::var_os("HOARD_REQUIRE_MOUNT").is_none(),
            "HOARD_REQUIRE_MOUNT is set but a tmpfs cannot be mounted here"
        );
        eprintln!("skipped: mounting a tmpfs needs root (set HOARD_REQUIRE_MOUNT=1 to insist)");
        None
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Makes the directory read-only for everything opened from now on, as `chmod a-w` does
    /// for a process that is not root: files already open stay writable (hoard's index),
    /// new files cannot be made (bodies). Done with a read-only bind mount over the
    /// directory, because a plain read-only remount is refused while files are open for
    /// writing.
    pub(crate) fn read_only_from_now_on(&self) {
        let path = self.dir.path();
        for args in [&["--bind"][..], &["-o", "remount,bind,ro"]] {
            let status = Command::new("mount")
                .args(args)
                .arg(path)
                .arg(path)
                .status()
                .unwrap();
            assert!(status.success(), "mount {args:?}");
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: hoard may still hold files open while the test ends. Twice: a read-only bind
        // mount may sit on the tmpfs (a failing second call is harmless).
        for _ in 0..2 {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .output();
        }
    }
}

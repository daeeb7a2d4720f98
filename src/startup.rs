//! Where a starting process finds its listeners: the start-up chain activation → import → bind,
//! walked once, above the layers it orchestrates (`listen` for activation and binds, `handoff`
//! for the import from a running predecessor), so that no layer below returns the top-level
//! [`Error`].

use std::path::{Path, PathBuf};

use tracing::info;

use crate::handoff::child::{dial, dial_if_listening, import, Predecessor};
use crate::listen::activation::ActivationEnv;
use crate::listen::spec::ListenSpec;
use crate::listen::{self, Listener};
use crate::settings::Settings;
use crate::Error;

/// What [`acquire`] found.
#[derive(Debug)]
pub struct Acquired {
    /// The listeners: systemd's first, then imported ones, then fresh binds.
    pub listeners: Vec<Listener>,
    /// The predecessor to report readiness to, when it speaks baton's extension.
    pub predecessor: Option<Predecessor>,
    /// The application state the predecessor handed over, if any.
    pub state: Option<Vec<u8>>,
    /// The service's control socket, inherited from a baton predecessor.
    pub control: Option<std::os::fd::OwnedFd>,
}

/// Walk the chain for every configured listener: activation, import, bind.
///
/// `predecessor_socket` is set when a baton parent spawned us: we import from it or fail, and
/// never bind what it should have handed over. Otherwise the hand-off socket of the settings is
/// dialed if something listens there (a predecessor that speaks only the base exchange).
pub async fn acquire(
    settings: &Settings,
    activation: &ActivationEnv,
    our_pid: u32,
    predecessor_socket: Option<&Path>,
) -> Result<Acquired, Error> {
    let mut listeners = listen::activated(activation, our_pid)?;
    let mut all = settings.listen.clone();
    all.extend(settings.always_listen.iter().cloned());
    let mut wanted: Vec<ListenSpec> = listen::resolve(&all).await?;
    // What systemd or a predecessor decides leaves these to be listened on all the same.
    let always = |w: &ListenSpec| settings.always_listen.iter().any(|a| a.same_socket(w));
    for l in &mut listeners {
        // Keep the address as the operator wrote it when it names systemd's socket.
        if let Some(i) = wanted.iter().position(|w| w.same_socket(&l.spec)) {
            l.spec = wanted.remove(i);
        }
    }
    if !listeners.is_empty() && !settings.listen_explicit {
        wanted.retain(always); // systemd decides where a socket-activated baton listens
    }

    let (path, stream) = match predecessor_socket {
        Some(path) => (path.to_owned(), Some(dial(path).await?)),
        None if !wanted.is_empty() => {
            let path = settings.handoff_socket_or_default();
            let stream = dial_if_listening(&path).await?;
            (path, stream)
        }
        None => (PathBuf::new(), None),
    };
    let mut predecessor = None;
    let mut state = None;
    let mut control = None;
    if let Some(stream) = stream {
        let imported = import(stream, &path, settings, &mut wanted, &listeners).await?;
        listeners.extend(imported.listeners);
        predecessor = imported.predecessor;
        state = imported.state;
        control = imported.control;
        if !settings.listen_explicit {
            wanted.retain(always); // the predecessor decides, as systemd would
        }
    }
    listeners.extend(listen::bind_all(wanted)?);
    if listeners.is_empty() {
        return Err(listen::ListenError::Nothing.into());
    }
    for l in &listeners {
        // The address is in the message too: `journalctl` shows only the message.
        info!(listener = %l.spec, name = %l.name, source = %l.source, "listening on {} ({})", l.spec, l.source);
    }
    Ok(Acquired {
        listeners,
        predecessor,
        state,
        control,
    })
}

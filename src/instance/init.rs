//! The data directory's initialisation, crash-safely and idempotently: `initdb`
//! (or a Redis directory) for a primary, a clone of the upstream for a replica.
//! The marker is written last; an interrupted initialisation is cleaned and done
//! again. Only the engine's own entries are ever removed: the role file stays.

use super::datadir::{DataDir, InitState};
use super::engine::Engine;
use super::error::InstanceError;
use super::fsutil;
use super::reaper::Reaper;
use super::role::{DesiredState, Upstream};
use super::status::Shared;

fn data_dir(shared: &Shared) -> DataDir {
    DataDir::new(&shared.config.data_dir)
}

/// Whether the data directory is initialised; cleans what an interrupted
/// initialisation left.
pub fn inspect(shared: &Shared) -> Result<bool, InstanceError> {
    let config = &shared.config;
    let dir = data_dir(shared);
    dir.ensure()?;
    let initialised = match dir.state(config.engine, shared.engine.owned_entries())? {
        InitState::Initialised(marker) => {
            if !shared.snapshot().data_dir_initialised {
                tracing::info!(data_dir = %dir.root().display(), initialised_at = %marker.initialised_at,
                    "the data directory is initialised; keeping its data");
            }
            true
        }
        InitState::Empty => false,
        InitState::Partial(leftovers) => {
            tracing::warn!(
                ?leftovers,
                "an interrupted initialisation left files; starting over"
            );
            dir.clean(&leftovers)?;
            false
        }
    };
    shared.update(|s| s.data_dir_initialised = initialised);
    Ok(initialised)
}

/// Initialises an empty data directory for a primary.
pub async fn initialise_primary(
    shared: &Shared,
    reaper: &Reaper,
    desired: &DesiredState,
) -> Result<(), InstanceError> {
    let dir = data_dir(shared);
    tracing::info!(data_dir = %dir.root().display(), engine = %shared.config.engine, "initialising the data directory");
    shared.engine.initialise(reaper).await?;
    finish(shared, &dir, desired)
}

/// Initialises an empty data directory as a copy of `upstream`.
pub async fn clone_replica(
    shared: &Shared,
    reaper: &Reaper,
    upstream: &Upstream,
    desired: &DesiredState,
) -> Result<(), InstanceError> {
    let dir = data_dir(shared);
    tracing::info!(data_dir = %dir.root().display(), upstream = %upstream.address(),
        "initialising the data directory from the upstream");
    Engine::clone_from(&shared.engine, upstream, reaper).await?;
    finish(shared, &dir, desired)
}

fn finish(shared: &Shared, dir: &DataDir, desired: &DesiredState) -> Result<(), InstanceError> {
    shared.engine.render_config(desired)?;
    dir.mark_initialised(shared.config.engine)?;
    shared.update(|s| s.data_dir_initialised = true);
    tracing::info!("the data directory is initialised");
    Ok(())
}

/// Moves the engine's data aside (unmarking the directory first), so that the
/// next start initialises it again.
pub fn set_aside(shared: &Shared) -> Result<(), InstanceError> {
    let dir = data_dir(shared);
    fsutil::remove_any(&dir.marker_path())?;
    fsutil::sync_parent(&dir.marker_path())?;
    shared.update(|s| s.data_dir_initialised = false);
    if let Some(aside) = shared.engine.set_aside()? {
        tracing::warn!(path = %aside.display(), "the data directory was moved aside");
    }
    Ok(())
}

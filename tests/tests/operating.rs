//! Operating a server on the embedded engines: scans, counts and bulk ends,
//! rollback under concurrent searches, garbage collection (scenarios in
//! `operating/scenarios.rs`, shared with `distributed_operating.rs`).

#[path = "operating/media.rs"]
mod media;
#[path = "operating/scenarios.rs"]
mod scenarios;

use annostore_tests::Server;
use scenarios::GC_ENV;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_counts_and_bulk_ends() {
    let srv = Server::start_with(GC_ENV);
    scenarios::scans_counts_and_bulk_ends(&srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_under_concurrent_searches() {
    let srv = Server::start_with(GC_ENV);
    scenarios::rollback_under_concurrent_searches(&srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_frees_what_is_no_longer_visible() {
    let mut srv = Server::start_with(GC_ENV);
    scenarios::gc_frees_what_is_no_longer_visible(&mut srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_runs() {
    let srv = Server::start_with(GC_ENV);
    scenarios::one_call_runs(&srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli() {
    let srv = Server::start_with(GC_ENV);
    scenarios::admin_cli(&srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_are_listed_from_their_runs() {
    media::listed_from_their_runs(&Server::start_with(GC_ENV)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_items_keys_follow_its_runs() {
    media::keys_follow_runs(&Server::start_with(GC_ENV)).await;
}

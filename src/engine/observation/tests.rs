//! The observation layer's unit tests.

use super::confirm::connection_of;
use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

async fn counting_list(lists: Arc<AtomicU32>) -> Result<Listed<u32>, UpstreamError> {
    lists.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(Listed {
        items: (0..50).map(|i| (format!("id-{i}"), i)).collect(),
        pages: 1,
    })
}

/// Observations with a list window, a resync age and read-backs first looked at
/// after `first_look`, in rounds of 50 ms.
fn observations_with(
    window: Duration,
    resync_age: Duration,
    first_look: Duration,
) -> Observations<u32> {
    let confirming = Confirming {
        round: Duration::from_millis(50),
        first_look,
        max_step: Duration::from_secs(60),
        grace: Duration::from_secs(600),
    };
    Observations::new(window, resync_age, confirming)
}

fn observations() -> Observations<u32> {
    observations_with(
        Duration::from_secs(2),
        Duration::from_secs(300),
        Duration::from_millis(50),
    )
}

/// One lookup of `id` in scope "team-a", listing with `counting_list`.
async fn look(
    observations: &Observations<u32>,
    lists: &Arc<AtomicU32>,
    id: &str,
    purpose: Purpose,
    members: usize,
) -> Lookup<u32> {
    look_in(observations, lists, "team-a", id, purpose, members).await
}

async fn look_in(
    observations: &Observations<u32>,
    lists: &Arc<AtomicU32>,
    scope: &str,
    id: &str,
    purpose: Purpose,
    members: usize,
) -> Lookup<u32> {
    observations
        .get(
            scope,
            id,
            purpose,
            || members,
            || counting_list(lists.clone()),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_resync_wave_shares_one_list() {
    let observations = Arc::new(observations());
    let lists = Arc::new(AtomicU32::new(0));
    let observes = (0..50).map(|i| {
        let (observations, lists) = (observations.clone(), lists.clone());
        async move {
            observations
                .get(
                    "team-a",
                    &format!("id-{i}"),
                    Purpose::Resync,
                    || 50,
                    || counting_list(lists),
                )
                .await
                .unwrap()
        }
    });
    let found = futures::future::join_all(observes).await;
    assert!(found.iter().all(|f| matches!(f, Lookup::Found(_))));
    assert_eq!(lists.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn snapshots_answer_by_id_in_any_list_order_and_are_freed_once_too_old() {
    let observations = observations_with(
        Duration::from_millis(20),
        Duration::from_millis(40),
        Duration::from_millis(10),
    );
    let list = || async {
        Ok(Listed {
            // Unsorted, with one id listed twice (pages shifting under a List).
            items: ["c", "a", "b", "a"]
                .iter()
                .enumerate()
                .map(|(i, id)| (id.to_string(), i as u32))
                .collect(),
            pages: 1,
        })
    };
    let get = |id: &'static str| observations.get("s", id, Purpose::Resync, || 3, list);
    assert_eq!(get("b").await.unwrap(), Lookup::Found(2));
    assert_eq!(get("c").await.unwrap(), Lookup::Found(0));
    assert!(matches!(get("a").await.unwrap(), Lookup::Found(1 | 3)));
    assert_eq!(
        get("d").await.unwrap(),
        Lookup::Unknown,
        "a miss is confirmed"
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    // A lone member does not list; the expired snapshot is dropped, not kept.
    let lone = observations.get("s", "b", Purpose::Resync, || 1, list);
    assert_eq!(lone.await.unwrap(), Lookup::Unknown);
    let scope = observations.scope("s");
    assert!(scope.state.lock().unwrap().snapshot.is_none());
}

/// A scope that is never read again (its objects are gone) does not keep its last
/// snapshot: idle scopes are swept away once too old, while a scope still being
/// written is kept.
#[tokio::test]
async fn scopes_nobody_reads_any_more_are_freed() {
    let observations = observations_with(
        Duration::from_millis(20),
        Duration::from_millis(300),
        Duration::from_millis(10),
    );
    let lists = Arc::new(AtomicU32::new(0));
    for scope in ["gone-1", "gone-2", "busy"] {
        let lookup = look_in(&observations, &lists, scope, "id-1", Purpose::Resync, 3);
        assert_eq!(lookup.await, Lookup::Found(1));
    }
    assert_eq!(observations.scope_count(), 3);
    tokio::time::sleep(Duration::from_millis(320)).await;
    observations.wrote("busy", "id-1", true);
    // Any read sweeps; only the scope read and the one being written remain.
    let lookup = look(&observations, &lists, "id-1", Purpose::Current, 0).await;
    assert_eq!(lookup, Lookup::Unknown);
    assert_eq!(observations.scope_count(), 2);
    assert!(observations.scopes.lock().unwrap().contains_key("busy"));
}

#[tokio::test]
async fn a_lone_object_or_a_lone_read_is_not_listed() {
    let observations = observations();
    let lists = Arc::new(AtomicU32::new(0));
    let lookup = look(&observations, &lists, "id-1", Purpose::Resync, 1).await;
    assert_eq!(lookup, Lookup::Unknown);
    let lookup = look(&observations, &lists, "id-1", Purpose::Current, 50).await;
    assert_eq!(lookup, Lookup::Unknown);
    assert_eq!(lists.load(Ordering::SeqCst), 0);
    // The same object again is no demand.
    let lookup = look(&observations, &lists, "id-1", Purpose::Current, 50).await;
    assert_eq!(lookup, Lookup::Unknown);
    // A second object in the window lists: from then on the snapshot answers.
    let lookup = look(&observations, &lists, "id-2", Purpose::Current, 50).await;
    assert_eq!(lookup, Lookup::Found(2));
    assert_eq!(lists.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn own_writes_and_absent_objects_are_read_directly() {
    let observations = observations();
    let lists = Arc::new(AtomicU32::new(0));
    let get = |id: &'static str| {
        let lists = lists.clone();
        let observations = &observations;
        async move {
            observations
                .get(
                    "team-a",
                    id,
                    Purpose::Resync,
                    || 50,
                    || counting_list(lists),
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(get("id-1").await, Lookup::Found(1));
    observations.wrote("team-a", "id-1", false);
    assert_eq!(get("id-1").await, Lookup::Unknown);
    assert_eq!(get("id-2").await, Lookup::Found(2));
    // Current reads of several written objects list again (see the confirmation
    // tests below for read-backs of accepted writes).
    observations.wrote("team-a", "id-2", false);
    let current = |id: &'static str| {
        let lists = lists.clone();
        let observations = &observations;
        async move {
            observations
                .get(
                    "team-a",
                    id,
                    Purpose::Current,
                    || 50,
                    || counting_list(lists),
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(current("id-1").await, Lookup::Unknown);
    assert_eq!(current("id-2").await, Lookup::Found(2));
    assert_eq!(lists.load(Ordering::SeqCst), 2);
    assert_eq!(current("id-1").await, Lookup::Found(1));
    assert_eq!(get("id-999").await, Lookup::Unknown);
    assert_eq!(lists.load(Ordering::SeqCst), 2);
    // Another scope lists on its own.
    observations
        .get(
            "team-b",
            "id-1",
            Purpose::Resync,
            || 50,
            || counting_list(lists.clone()),
        )
        .await
        .unwrap();
    assert_eq!(lists.load(Ordering::SeqCst), 3);
}

/// A List of ids 0–49 without `missing`.
async fn list_without(
    lists: Arc<AtomicU32>,
    missing: &'static str,
) -> Result<Listed<u32>, UpstreamError> {
    let mut listed = counting_list(lists).await?;
    listed.items.retain(|(id, _)| id != missing);
    Ok(listed)
}

async fn confirm(
    observations: &Observations<u32>,
    lists: &Arc<AtomicU32>,
    scope: &str,
    id: &str,
    missing: &'static str,
) -> Lookup<u32> {
    observations
        .get(
            scope,
            id,
            Purpose::Confirm,
            || 0,
            || list_without(lists.clone(), missing),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_write_is_read_back_only_once_it_is_due_to_show() {
    let observations = observations_with(
        Duration::from_secs(5),
        Duration::from_secs(300),
        Duration::from_millis(300),
    );
    let lists = Arc::new(AtomicU32::new(0));
    observations.wrote("ns/ic/gw", "id-1", true);
    let Lookup::Later(wait) = confirm(&observations, &lists, "ns/ic/gw", "id-1", "").await else {
        panic!("not due yet")
    };
    assert!(wait > Duration::from_millis(250) && wait <= Duration::from_millis(330));
    // Its echo (a current read moments later) waits too.
    let echo = look_in(
        &observations,
        &lists,
        "ns/ic/gw",
        "id-1",
        Purpose::Current,
        0,
    );
    assert!(matches!(echo.await, Lookup::Later(_)));
    assert_eq!(lists.load(Ordering::SeqCst), 0);
    let due = observations.next_look("ns/ic/gw", "id-1").unwrap();
    assert!(due <= wait);

    // Due, and alone in its scope: read with a GET.
    tokio::time::sleep(wait).await;
    let lookup = confirm(&observations, &lists, "ns/ic/gw", "id-1", "").await;
    assert_eq!(lookup, Lookup::Unknown);
    // The GET found it applied: it is no longer awaited, and reads are plain again.
    observations.looked("ns/ic/gw", "id-1", true);
    assert_eq!(observations.next_look("ns/ic/gw", "id-1"), None);
    // A read-back the engine asks for without a write of this process (a restart):
    // awaited from its age.
    observations.awaiting("ns/ic/gw", "id-2", Duration::from_secs(10));
    assert_eq!(
        observations.next_look("ns/ic/gw", "id-2"),
        Some(Duration::ZERO)
    );
}

#[tokio::test]
async fn due_writes_of_a_scope_share_one_list_per_round() {
    let observations = observations_with(
        Duration::from_secs(5),
        Duration::from_secs(300),
        Duration::from_millis(100),
    );
    let lists = Arc::new(AtomicU32::new(0));
    for i in 0..5 {
        observations.wrote("ns/ic/gw", &format!("id-{i}"), true);
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    let ids: Vec<String> = (0..5).map(|i| format!("id-{i}")).collect();
    let found = futures::future::join_all(
        ids.iter()
            .map(|id| confirm(&observations, &lists, "ns/ic/gw", id, "")),
    )
    .await;
    assert_eq!(
        found,
        (0..5).map(Lookup::Found).collect::<Vec<_>>(),
        "one List answers the writes due together"
    );
    assert_eq!(lists.load(Ordering::SeqCst), 1);

    // Writes made after that List need a newer one.
    observations.wrote("ns/ic/gw", "id-5", true);
    observations.wrote("ns/ic/gw", "id-6", true);
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        confirm(&observations, &lists, "ns/ic/gw", "id-5", "").await,
        Lookup::Found(5)
    );
    assert_eq!(lists.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_due_write_a_list_does_not_show_is_looked_at_a_step_later() {
    let observations = observations_with(
        Duration::from_secs(5),
        Duration::from_secs(300),
        Duration::from_millis(100),
    );
    let lists = Arc::new(AtomicU32::new(0));
    observations.wrote("ns/ic/gw", "id-1", true);
    observations.wrote("ns/ic/gw", "id-2", true);
    tokio::time::sleep(Duration::from_millis(120)).await;
    // The List shows id-2 but not id-1 yet.
    let lookup = confirm(&observations, &lists, "ns/ic/gw", "id-1", "id-1").await;
    let Lookup::Later(wait) = lookup else {
        panic!("{lookup:?}")
    };
    // Looked at again one step (at least 250 ms) later; the Connection's estimate
    // rose to the age of the miss plus that step.
    assert!(wait >= Duration::from_millis(200), "{wait:?}");
    let estimate = observations.visibility.estimate("ns/ic");
    assert!(estimate >= Duration::from_millis(350), "{estimate:?}");
    assert_eq!(
        confirm(&observations, &lists, "ns/ic/gw", "id-2", "id-1").await,
        Lookup::Found(2)
    );
    assert_eq!(lists.load(Ordering::SeqCst), 1);
    // The next write of that Connection (another scope too) is first looked at later.
    observations.wrote("ns/ic/other", "id-3", true);
    let first = observations.next_look("ns/ic/other", "id-3").unwrap();
    assert!(first >= Duration::from_millis(340), "{first:?}");
}

#[test]
fn visibility_is_learned_per_connection() {
    assert_eq!(connection_of("ns/ic/gw-1"), "ns/ic");
    assert_eq!(connection_of("ns/ic"), "ns/ic");
}

#[tokio::test]
async fn a_scope_bigger_than_its_due_objects_is_not_listed() {
    let observations = observations();
    let lists = Arc::new(AtomicU32::new(0));
    let big = |lists: Arc<AtomicU32>| async move {
        lists.fetch_add(1, Ordering::SeqCst);
        Ok(Listed {
            items: vec![("id-1".to_string(), 1)],
            pages: 40,
        })
    };
    observations
        .get(
            "app",
            "id-1",
            Purpose::Resync,
            || 100,
            || big(lists.clone()),
        )
        .await
        .unwrap();
    assert_eq!(lists.load(Ordering::SeqCst), 1);
    // Once the List is known to take 40 pages, 10 members are cheaper with GETs.
    observations.scope("app").state.lock().unwrap().snapshot = None;
    let lookup = observations
        .get("app", "id-1", Purpose::Resync, || 10, || big(lists.clone()))
        .await
        .unwrap();
    assert_eq!(lookup, Lookup::Unknown);
    assert_eq!(lists.load(Ordering::SeqCst), 1);
}

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A child that fails when told to, and counts how often it was started.
struct Flaky {
    starts: Arc<AtomicUsize>,
}

enum FlakyMsg {
    Fail,
}

impl Actor for Flaky {
    type Msg = FlakyMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<FlakyMsg>, _args: ()) -> Result<(), ActorProcessingErr> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<FlakyMsg>,
        msg: FlakyMsg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FlakyMsg::Fail => Err("told to fail".into()),
        }
    }
}

fn flaky_spec(starts: Arc<AtomicUsize>, cells: Arc<std::sync::Mutex<Vec<ActorCell>>>) -> ChildSpec {
    ChildSpec {
        name: "flaky".to_owned(),
        kind: "test",
        spawn: Arc::new(move |supervisor| {
            let starts = starts.clone();
            let cells = cells.clone();
            Box::pin(async move {
                let (actor, _join) = Actor::spawn_linked(None, Flaky { starts }, (), supervisor).await?;
                cells.lock().expect("test mutex").push(actor.get_cell());
                Ok(actor.get_cell())
            })
        }),
    }
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_failed_child_is_restarted_with_a_new_actor() {
    let starts = Arc::new(AtomicUsize::new(0));
    let cells = Arc::new(std::sync::Mutex::new(Vec::new()));
    let policy = RestartPolicy { initial_backoff: Duration::from_millis(1), ..RestartPolicy::default() };
    let (root, join) =
        RootHandle::start(RootArgs { children: vec![flaky_spec(starts.clone(), cells.clone())], policy })
            .await
            .expect("starts");

    let first = cells.lock().expect("test mutex")[0].clone();
    first.send_message(FlakyMsg::Fail).expect("child alive");

    wait_until(|| starts.load(Ordering::SeqCst) == 2).await;
    let children = root.children().await.expect("answers");
    assert_eq!(children, vec![ChildStatus { name: "flaky".into(), kind: "test", restarts: 1 }]);
    let second = cells.lock().expect("test mutex")[1].clone();
    assert_ne!(first.get_id(), second.get_id());

    root.stop(Duration::from_secs(5)).await;
    join.await.expect("supervisor ends");
}

#[tokio::test]
async fn the_supervisor_gives_up_when_a_child_exceeds_its_restart_budget() {
    let starts = Arc::new(AtomicUsize::new(0));
    let cells = Arc::new(std::sync::Mutex::new(Vec::new()));
    let policy = RestartPolicy {
        max_restarts: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
        window: Duration::from_secs(60),
    };
    let (_root, join) =
        RootHandle::start(RootArgs { children: vec![flaky_spec(starts.clone(), cells.clone())], policy })
            .await
            .expect("starts");

    for expected_starts in 1..=3 {
        wait_until(|| starts.load(Ordering::SeqCst) == expected_starts).await;
        let latest = cells.lock().expect("test mutex").last().cloned().expect("a child");
        latest.send_message(FlakyMsg::Fail).expect("child alive");
    }
    tokio::time::timeout(Duration::from_secs(5), join).await.expect("supervisor stops").expect("joins");
    assert_eq!(starts.load(Ordering::SeqCst), 3);
}

#[test]
fn backoff_doubles_and_is_capped() {
    let policy = RestartPolicy {
        max_restarts: 10,
        window: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(350),
    };
    assert_eq!(policy.backoff(0), Duration::from_millis(100));
    assert_eq!(policy.backoff(1), Duration::from_millis(200));
    assert_eq!(policy.backoff(2), Duration::from_millis(350));
}

//! The dispatcher's loop: how much it asks of the store while registrations arrive one by one,
//! which under load is once per email and so part of the cost of every registration.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use registrar_application::{
    ports::{ActivationEmail, MailError, Mailer},
    testing::PassingStore,
};
use tokio::{sync::watch, time::Instant};

use crate::support::{App, PASSWORD};

#[tokio::test]
async fn each_email_queued_alone_costs_the_loop_one_claim_and_the_gauge_waits_for_its_timer() {
    const EMAILS: usize = 10;
    let app = App::new();
    let store = PassingStore::new(app.store.clone());
    let dispatcher = app.dispatcher_over(store.clone(), app.mailer.clone());
    // The poll never comes within the test: only the wake-ups of the registrations drive it.
    let poll = Duration::from_hours(1);
    let (stop, stopped) = watch::channel(false);

    let registrations = async {
        for i in 0..EMAILS {
            app.register(&format!("user{i}@example.com"), PASSWORD)
                .await
                .unwrap();
            // Let the loop deliver this one before the next is queued: the busiest case, a
            // pass per email.
            while app.mailer.sent().len() <= i {
                tokio::task::yield_now().await;
            }
        }
        stop.send(true).unwrap();
    };
    tokio::join!(
        dispatcher.run(app.signal.clone(), poll, stopped),
        registrations
    );

    assert_eq!(app.mailer.sent().len(), EMAILS);
    // One claim at start-up, then one per wake-up: no second claim to learn that nothing else
    // was due.
    assert_eq!(store.calls("claim_mail"), 1 + EMAILS);
    // The outbox is counted for the gauge at start-up, then not again within the poll interval.
    assert_eq!(store.calls("outbox_depth"), 1);
}

#[tokio::test(start_paused = true)]
async fn emails_queued_within_the_batch_window_make_one_claim_and_one_after_a_quiet_spell_goes_at_once()
 {
    let app = App::new();
    let store = PassingStore::new(app.store.clone());
    let dispatcher = app.dispatcher_over(store.clone(), app.mailer.clone());
    let window = app.delivery.batch_window;
    let poll = Duration::from_hours(1);
    let (stop, stopped) = watch::channel(false);
    // Tokio's clock is paused: it moves only when every task waits for a timer.
    let started = Instant::now();

    let registrations = async {
        // The start-up pass ran at `started` and found nothing.
        assert_eq!(store.calls("claim_mail"), 1);
        app.register("first@example.com", PASSWORD).await.unwrap();
        // The dispatcher is awake, and could claim the first email alone now.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        for i in 0..4 {
            app.register(&format!("next{i}@example.com"), PASSWORD)
                .await
                .unwrap();
        }
        while app.mailer.sent().len() < 5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let first_pass = Instant::now() - started;
        let claims = store.calls("claim_mail");

        tokio::time::sleep(window * 2).await;
        let queued = Instant::now();
        app.register("later@example.com", PASSWORD).await.unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let later = (app.mailer.sent().len(), Instant::now() - queued);
        stop.send(true).unwrap();
        (first_pass, claims, later)
    };
    let ((), (first_pass, claims, later)) = tokio::join!(
        dispatcher.run(app.signal.clone(), poll, stopped),
        registrations
    );

    // All five in one claim at the end of the window.
    assert!(
        (window..=window + Duration::from_millis(1)).contains(&first_pass),
        "{first_pass:?}"
    );
    assert_eq!(claims, 2);
    // After a quiet spell a wake-up is served at once, the clock not having moved.
    assert_eq!(later, (6, Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn outcomes_wait_to_be_recorded_together_without_holding_up_the_next_claim() {
    let app = App::new();
    let store = PassingStore::new(app.store.clone());
    let dispatcher = app.dispatcher_over(store.clone(), app.mailer.clone());
    let (claim_window, record_window) = (app.delivery.batch_window, app.delivery.record_window);
    let poll = Duration::from_hours(1);
    let (stop, stopped) = watch::channel(false);
    let app = &app;
    let delivered = |to: &'static str| async move {
        let account = app.stored(to).await.unwrap().account;
        account.code().unwrap().delivered_at().is_some()
    };
    let sent = |count: usize| async move {
        while app.mailer.sent().len() < count {
            tokio::task::yield_now().await;
        }
    };

    let scenario = async {
        // Past the start-up claim's window, so each wake-up below is served at once.
        tokio::time::sleep(claim_window * 2).await;
        app.register("first@example.com", PASSWORD).await.unwrap();
        sent(1).await;
        tokio::time::sleep(claim_window * 2).await;
        let queued = Instant::now();
        app.register("second@example.com", PASSWORD).await.unwrap();
        sent(2).await;
        let waited = Instant::now() - queued;
        let meanwhile = (
            store.calls("finish_mail"),
            delivered("first@example.com").await,
        );
        tokio::time::sleep(record_window).await;
        let later = (
            store.calls("finish_mail"),
            delivered("first@example.com").await,
            delivered("second@example.com").await,
        );
        stop.send(true).unwrap();
        (waited, meanwhile, later)
    };
    let ((), (waited, meanwhile, later)) =
        tokio::join!(dispatcher.run(app.signal.clone(), poll, stopped), scenario);

    // The second email went out at once, while the first one's outcome waited to be recorded.
    assert_eq!(waited, Duration::ZERO);
    assert_eq!(meanwhile, (0, false));
    // Then both outcomes made one record.
    assert_eq!(later, (1, true, true));
}

/// Accepts every email after the delay its address is given (Tokio's clock), and keeps the
/// addresses it accepted.
#[derive(Clone, Default)]
struct AfterDelays {
    delays: Vec<(&'static str, Duration)>,
    accepted: Arc<Mutex<Vec<String>>>,
}

impl AfterDelays {
    fn new(delays: Vec<(&'static str, Duration)>) -> Self {
        Self {
            delays,
            ..Self::default()
        }
    }

    fn accepted(&self, to: &str) -> bool {
        self.accepted.lock().unwrap().iter().any(|done| done == to)
    }
}

impl Mailer for AfterDelays {
    async fn send_activation(&self, email: &ActivationEmail) -> Result<(), MailError> {
        if let Some((_, delay)) = self.delays.iter().find(|(to, _)| *to == email.to.as_str()) {
            tokio::time::sleep(*delay).await;
        }
        self.accepted
            .lock()
            .unwrap()
            .push(email.to.as_str().to_owned());
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn sends_that_end_within_the_record_window_are_recorded_together_and_a_slow_one_alone() {
    let app = App::new();
    let window = app.delivery.record_window;
    let mailer = AfterDelays::new(vec![
        ("fast@example.com", Duration::ZERO),
        ("next@example.com", window / 2),
        ("slow@example.com", window * 10),
    ]);
    for (to, _) in &mailer.delays {
        app.register(to, PASSWORD).await.unwrap();
    }
    let store = PassingStore::new(app.store.clone());
    let dispatcher = app.dispatcher_over(store.clone(), mailer);
    let app = &app;
    let delivered = |to: &'static str| async move {
        let account = app.stored(to).await.unwrap().account;
        account.code().unwrap().delivered_at().is_some()
    };

    let (report, meanwhile) = tokio::join!(dispatcher.deliver_due(), async {
        // Past the window after the first send ended, long before the slow one ends.
        tokio::time::sleep(window * 2).await;
        (
            store.calls("finish_mail"),
            delivered("fast@example.com").await,
            delivered("next@example.com").await,
            delivered("slow@example.com").await,
        )
    });

    assert_eq!(meanwhile, (1, true, true, false));
    assert_eq!(report.unwrap().sent, 3);
    assert_eq!(store.calls("finish_mail"), 2);
    assert!(delivered("slow@example.com").await);
}

#[tokio::test(start_paused = true)]
async fn an_email_queued_while_a_slow_send_is_out_does_not_wait_for_it() {
    let app = App::new();
    let window = app.delivery.batch_window;
    let mailer = AfterDelays::new(vec![("slow@example.com", Duration::from_secs(9))]);
    let dispatcher = app.dispatcher_over(app.store.clone(), mailer.clone());
    let poll = Duration::from_hours(1);
    let (stop, stopped) = watch::channel(false);

    let scenario = async {
        app.register("slow@example.com", PASSWORD).await.unwrap();
        // Its send is out, and stays out for seconds.
        tokio::time::sleep(window * 2).await;
        app.register("quick@example.com", PASSWORD).await.unwrap();
        let queued = Instant::now();
        while !mailer.accepted("quick@example.com") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let waited = Instant::now() - queued;
        let slow_done = mailer.accepted("slow@example.com");
        stop.send(true).unwrap();
        (waited, slow_done)
    };
    let ((), (waited, slow_done)) =
        tokio::join!(dispatcher.run(app.signal.clone(), poll, stopped), scenario);

    assert!(waited <= window, "the quick email waited {waited:?}");
    assert!(!slow_done);
    // Stopping let the slow send finish, and its outcome was recorded.
    assert!(mailer.accepted("slow@example.com"));
    assert_eq!(app.outbox_depth().await, 0);
}

//! The dispatcher's loop: how much it asks of the store while registrations arrive one by one,
//! which under load is once per email and so part of the cost of every registration.

use std::time::Duration;

use registrar_application::{Dispatcher, testing::PassingStore};
use tokio::sync::watch;

use crate::support::{App, PASSWORD};

#[tokio::test]
async fn each_email_queued_alone_costs_the_loop_one_claim_and_the_gauge_waits_for_its_timer() {
    const EMAILS: usize = 10;
    let app = App::new();
    let store = PassingStore::new(app.store.clone());
    let dispatcher = Dispatcher::new(
        store.clone(),
        app.mailer.clone(),
        app.clock.clone(),
        app.entropy.clone(),
        app.traces.clone(),
        app.codes,
        app.delivery,
    );
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

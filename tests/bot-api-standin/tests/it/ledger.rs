//! The sendMessage ledger and the faults it must account for exactly: each
//! call's record says whether the message was recorded and whether the
//! client read the answer, as a raw HTTP/1.1 client on 127.0.0.1 sees it.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bot_api_standin::ledger::{Answer, Attempt, Lost};
use bot_api_standin::{Fault, FaultMix, StandIn};
use serde_json::json;

const TOKEN: &str = "77:ledger-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAA";

async fn standin() -> StandIn {
    let standin = StandIn::start().await.unwrap();
    standin.add_bot(TOKEN, "ledger_bot");
    standin
}

/// A keep-alive connection, as an HTTP client's pool holds one.
struct Client {
    stream: TcpStream,
}

impl Client {
    fn connect(standin: &StandIn) -> Client {
        let stream = TcpStream::connect(standin.addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { stream }
    }

    /// Writes a sendMessage request for chat 5, replying to message `reply_to`.
    fn send(&mut self, reply_to: i64) {
        let body =
            json!({ "chat_id": 5, "text": format!("re {reply_to}"), "reply_parameters": { "message_id": reply_to } })
                .to_string();
        let request = format!(
            "POST /bot{TOKEN}/sendMessage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes()).unwrap();
    }

    /// Reads one answer: its status line, or `None` when the connection
    /// closed first. Bodies here are small and come in one piece.
    fn read(&mut self) -> Option<String> {
        let mut buf = [0u8; 4096];
        match self.stream.read(&mut buf) {
            Ok(0) | Err(_) => None,
            Ok(n) => String::from_utf8_lossy(&buf[..n]).lines().next().map(str::to_owned),
        }
    }
}

/// Waits until the stand-in has settled `n` calls.
async fn settled(standin: &StandIn, n: usize) -> Vec<Attempt> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempts = standin.attempts(TOKEN);
        if attempts.len() >= n && attempts.iter().all(|a| a.answer != Answer::Pending) {
            return attempts;
        }
        assert!(Instant::now() < deadline, "not settled: {attempts:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_fault_leaves_the_record_it_should() {
    let standin = standin().await;
    standin.inject(
        TOKEN,
        "sendMessage",
        [
            Fault::Drop,
            Fault::LoseAnswer,
            Fault::Malformed,
            Fault::RetryAfter(2),
            Fault::SlowStatus(502, Duration::from_millis(200)),
        ],
    );
    let s = standin.clone();
    let statuses = tokio::task::spawn_blocking(move || {
        let mut statuses = Vec::new();
        for reply_to in 1..=6 {
            // A connection each: Drop and LoseAnswer close theirs.
            let mut client = Client::connect(&s);
            let start = Instant::now();
            client.send(reply_to);
            statuses.push(client.read());
            if reply_to == 5 {
                assert!(start.elapsed() >= Duration::from_millis(200), "the slow 502 was not slow");
            }
        }
        statuses
    })
    .await
    .unwrap();
    let status = |s: &Option<String>| s.as_deref().map(|l| l.split(' ').nth(1).unwrap().to_owned());
    let got: Vec<Option<String>> = statuses.iter().map(status).collect();
    let expected = [None, None, Some("200"), Some("429"), Some("502"), Some("200")];
    assert_eq!(got, expected.map(|s| s.map(str::to_owned)));

    let attempts = settled(&standin, 6).await;
    let summary: Vec<(bool, &str, bool)> = attempts
        .iter()
        .map(|a| {
            let answer = match a.answer {
                Answer::Delivered { status: 200, .. } => "200",
                Answer::Delivered { status: 429, .. } => "429",
                Answer::Delivered { status: 502, .. } => "502",
                Answer::Lost { why: Lost::Dropped, .. } => "dropped",
                other => panic!("unexpected {other:?}"),
            };
            (a.recorded, answer, a.ambiguous())
        })
        .collect();
    assert_eq!(
        summary,
        [
            (false, "dropped", true),
            (true, "dropped", true),
            (false, "200", true),
            (false, "429", false),
            (false, "502", false),
            (true, "200", false),
        ]
    );
    assert!(attempts[5].succeeded() && attempts[3].refused() && attempts[4].refused());
    assert_eq!(attempts.iter().map(|a| a.reply_to.unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    // Only the recorded calls reached the chat.
    let sent: Vec<Option<i64>> = standin.sent(TOKEN).iter().map(|s| s.reply_to).collect();
    assert_eq!(sent, [Some(2), Some(6)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_answer_outlasts_the_client_and_is_lost() {
    let standin = standin().await;
    standin.inject(TOKEN, "sendMessage", [Fault::SlowAnswer]);
    let s = standin.clone();
    let gave_up = tokio::task::spawn_blocking(move || {
        let mut client = Client::connect(&s);
        client.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        client.send(1);
        let answer = client.read();
        // The client's timeout, then it closes the connection.
        let leaving = Instant::now();
        drop(client);
        (answer, leaving)
    })
    .await
    .unwrap();
    assert_eq!(gave_up.0, None, "the slow answer came before the client's timeout");
    let attempts = settled(&standin, 1).await;
    let a = &attempts[0];
    assert!(a.recorded, "a slow answer is for a call carried out");
    let Answer::Lost { why: Lost::ClientGone, at } = a.answer else { panic!("{a:?}") };
    assert!(at >= gave_up.1, "settled before the client left");
    assert!(a.in_flight_at(gave_up.1) && !a.in_flight_at(at + Duration::from_millis(1)));
    assert_eq!(standin.sent(TOKEN).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_left_unread_by_a_dying_client_is_lost_and_a_read_one_is_not() {
    let standin = standin().await;
    let s = standin.clone();
    tokio::task::spawn_blocking(move || {
        // Read, then the next request on the same connection, then a clean close.
        let mut reader = Client::connect(&s);
        reader.send(1);
        assert!(reader.read().is_some());
        reader.send(2);
        assert!(reader.read().is_some());
        drop(reader);
        // Answered but never read: closing a socket with unread data resets
        // it, as the kernel does for a process killed with -9.
        let mut dying = Client::connect(&s);
        dying.send(3);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.attempts(TOKEN).get(2).is_some_and(|a| matches!(a.answer, Answer::Delivered { .. })) {
            assert!(Instant::now() < deadline, "no answer written");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20));
        drop(dying);
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let attempts = loop {
        let attempts = standin.attempts(TOKEN);
        if matches!(attempts[2].answer, Answer::Lost { .. }) {
            break attempts;
        }
        assert!(Instant::now() < deadline, "the reset was not noticed: {attempts:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(attempts[0].succeeded() && attempts[1].succeeded(), "{attempts:#?}");
    assert!(matches!(attempts[2].answer, Answer::Lost { why: Lost::Reset, .. }), "{attempts:#?}");
    assert!(attempts[2].recorded && attempts[2].ambiguous());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_mix_applies_where_no_fault_is_queued() {
    let standin = standin().await;
    standin.set_fault_mix(TOKEN, "sendMessage", FaultMix::new(1).with(1.0, Fault::RetryAfter(4)));
    standin.inject(TOKEN, "sendMessage", [Fault::Status(500)]);
    let s = standin.clone();
    tokio::task::spawn_blocking(move || {
        let mut client = Client::connect(&s);
        for reply_to in 1..=3 {
            client.send(reply_to);
            assert!(client.read().is_some());
        }
    })
    .await
    .unwrap();
    let faults: Vec<Option<Fault>> = settled(&standin, 3).await.into_iter().map(|a| a.fault).collect();
    assert_eq!(faults, [Some(Fault::Status(500)), Some(Fault::RetryAfter(4)), Some(Fault::RetryAfter(4))]);
}

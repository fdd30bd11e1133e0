//! Palisade refuses NATS servers older than 2.10 (2.9 silently ignores consumer
//! subject filters) and servers without JetStream, with a message saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A NATS server that speaks just enough protocol to complete a client handshake.
async fn fake_nats(version: &'static str, jetstream: bool) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let info = format!(
                    "INFO {{\"server_id\":\"FAKE\",\"version\":\"{version}\",\"proto\":1,\
                     \"host\":\"127.0.0.1\",\"port\":{port},\"max_payload\":1048576,\
                     \"headers\":true,\"jetstream\":{jetstream}}}\r\n"
                );
                write.write_all(info.as_bytes()).await.unwrap();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with("PING") && write.write_all(b"PONG\r\n").await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn nats_2_9_is_refused_with_a_reason() {
    let port = fake_nats("2.9.10", true).await;
    let err = palisade::connect_nats(&format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("2.9.10 is too old"), "{text}");
    assert!(text.contains("subject filters"), "{text}");
}

#[tokio::test]
async fn a_server_without_jetstream_is_refused() {
    let port = fake_nats("2.11.4", false).await;
    let err = palisade::connect_nats(&format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("JetStream disabled"), "{err:#}");
}

#[tokio::test]
async fn an_unreachable_server_names_the_command_that_starts_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = palisade::connect_nats(&format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("scripts/stack.sh up"),
        "{err:#}"
    );
}

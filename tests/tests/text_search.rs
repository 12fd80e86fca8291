//! Text to image end to end: `annostore ingest --text-encoder` writes the slideshow's
//! crops in the MiniLM text space (the class-text bridge), and a server configured with
//! the same encoder (`[search.text_encoder]`) finds each still's object from a query
//! string, through the API and the CLI.

use annostore_tests::{Server, serde_json};
use serde_json::{Value, json};

fn shared(path: &str) -> String {
    annostore_ingest::testkit::shared(path)
        .display()
        .to_string()
}

/// The still of the slideshow that a time falls in (stills of 4 s).
fn still(a: &Value) -> i64 {
    a["start_ms"].as_i64().unwrap_or(-1) / 4_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_string_finds_the_still_it_describes() {
    let minilm = shared("models/minilm_l6_v2_int8.onnx");
    let tokenizer = shared("models/minilm_tokenizer.json");
    let srv = Server::start_with(&[
        ("ANNOSTORE_SEARCH__TEXT_ENCODER__KIND", "onnx"),
        ("ANNOSTORE_SEARCH__TEXT_ENCODER__MODEL", &minilm),
        ("ANNOSTORE_SEARCH__TEXT_ENCODER__TOKENIZER", &tokenizer),
    ]);
    let out = srv.cli(&[
        "ingest",
        &shared("media/slideshow_720p.mp4"),
        "--detector",
        &shared("models/centernet.onnx"),
        "--embedder",
        &shared("models/mobilenetv2_imagenet.onnx"),
        "--text-encoder",
        &minilm,
        "--tokenizer",
        &tokenizer,
    ]);
    assert!(
        out.status.success(),
        "ingest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let types = srv.get("/v1/types").await;
    let types = types.expect(200).to_string();
    assert!(
        types.contains("\"objects-text\"") && types.contains("\"embedding_dim\":384"),
        "{types}"
    );
    // The slideshow: cup 8-12 s (still 2), motorcycle 12-16 s (3), person 16-20 s (4).
    for (query, want) in [("motorcycle", 3), ("a coffee mug", 2), ("a person", 4)] {
        let page = srv
            .search(&json!({"annotation_type": "objects-text", "knn": {"text": query, "k": 5}}))
            .await;
        let page = page.expect(200);
        let first = &page["annotations"][0];
        assert_eq!(still(first), want, "{query}: first hit {first}");
        let scores: Vec<f64> = page["scores"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "{query}: scores not descending {scores:?}"
        );
    }
    // The same from the CLI.
    let out = srv.cli(&[
        "search",
        "--type",
        "objects-text",
        "--like",
        "motorbike",
        "--k",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let row: Value = serde_json::from_slice(&out.stdout).expect("one JSON row");
    assert_eq!(still(&row), 3, "{row}");
    // A server without an encoder refuses knn.text clearly.
    let plain = Server::start();
    plain
        .search(&json!({"knn": {"text": "motorcycle"}}))
        .await
        .problem(422);
}

//! Page tokens tampered with: every bit of a token's text flipped, truncated, extended,
//! moved to another query, base64 garbage, over-long, and forged with a valid
//! fingerprint but impossible positions. Tokens are validated, not signed: an edit is
//! refused (400), or it still names a position of the same query and reads a page of it.

use super::raw::Hostile;
use annostore_tests::{Server, anns, s};
use serde_json::{Value, json};

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_decode(t: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in t.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64url") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_page_tokens() {
    let srv = Server::start();
    let h = Hostile::new(&srv, "page_tokens");
    srv.register("objects", 1).await;
    let op = s(&srv.start_op("objects", 1, "p").await, "id");
    srv.upsert_ok(&op, &anns("m", 6, "cat", "r")).await;
    srv.finish(&op).await.expect(200);
    let query = json!({"media_id": "m", "sort": "confidence", "limit": 2});
    let first = srv.search(&query).await.expect(200).clone();
    let token = s(&first, "next_page_token");
    let page = |t: &str| {
        let mut q = query.clone();
        q["page_token"] = json!(t);
        q
    };
    srv.search(&page(&token)).await.expect(200);

    // Every bit of every character flipped, within the alphabet.
    let mut refused = 0;
    for i in 0..token.len() {
        for bit in [1, 2, 4, 8, 16, 32] {
            let mut t = token.clone().into_bytes();
            let v = ALPHABET.iter().position(|a| *a == t[i]).unwrap();
            t[i] = ALPHABET[v ^ bit];
            let r = srv.search(&page(&String::from_utf8(t).unwrap())).await;
            if r.status == 400 {
                h.check(&r, 400, "bit flip");
                refused += 1;
            } else {
                // Still a position in this query: a page of it.
                h.count();
                for a in r.expect(200)["annotations"].as_array().unwrap() {
                    assert_eq!(a["media_id"], "m");
                }
            }
        }
    }
    assert!(
        refused * 2 > token.len() * 6,
        "only {refused} flips refused"
    );

    // Cut short, extended, padded, or moved to another query.
    for n in [0, 1, 4, token.len() / 2, token.len() - 2, token.len() - 1] {
        h.check(&srv.search(&page(&token[..n])).await, 400, "truncated");
    }
    for t in [
        format!("{token}AA"),
        format!("{token}="),
        format!("{token}=="),
        format!("A{token}"),
    ] {
        h.check(&srv.search(&page(&t)).await, 400, "extended");
    }
    for other in [
        json!({"media_id": "n", "sort": "confidence"}),
        json!({"media_id": "m"}),
        json!({"media_id": "m", "sort": "confidence", "label": "cat"}),
        json!({"sort": "confidence"}),
    ] {
        let mut q = other.clone();
        q["page_token"] = json!(token);
        h.check(&srv.search(&q).await, 400, &other.to_string());
    }
    let agg = json!({"media_id": "m", "aggregations": {}, "page_token": token});
    h.check(
        &srv.post("/v1/annotations/aggregate", &agg).await,
        422,
        "aggregate",
    );
    // Not base64url at all, or far too long.
    for t in [
        "!!!!",
        "%%%%",
        "a b",
        "+/+/",
        "😀",
        "\u{0}",
        "====",
        &"A".repeat(2_049),
        &"A".repeat(1 << 20),
    ] {
        h.check(&srv.search(&page(t)).await, 400, "garbage");
        let q = format!(
            "/v1/media/m/annotations?page_token={}",
            t.replace('%', "%25").replace(' ', "%20")
        );
        if q.len() < 8_000 {
            h.check(&srv.get(&q).await, 400, "listing");
        }
    }
    // Forged: the real version and fingerprint, with positions no page can have.
    let real: Value = serde_json::from_slice(&b64_decode(&token)).unwrap();
    for (pointer, v) in [
        ("/after/rank", "1e39"),
        ("/after/rank", "\"NaN\""),
        ("/after/rank", "-1e39"),
        ("/after/key/start_ms", "1e400"),
        ("/after/key/start_ms", "\"0\""),
        ("/after/key/id", "\"../../etc/passwd\""),
        ("/after/key", "null"),
        ("/view", "-1"),
        ("/v", "1"),
        ("/v", "256"),
    ] {
        let json = forge(&real, pointer, v);
        h.check(
            &srv.search(&page(&b64_encode(json.as_bytes()))).await,
            400,
            &json,
        );
    }
    // A forged but possible position reads a page of this query.
    let json = forge(&real, "/after/key/media_id", "\"zzz\"");
    h.count();
    assert_eq!(
        srv.search(&page(&b64_encode(json.as_bytes())))
            .await
            .expect(200)["annotations"],
        json!([])
    );

    // Operation listings: their tokens are 16 bytes; anything else is refused.
    let ops = srv.get("/v1/operations?limit=1").await.expect(200).clone();
    assert!(ops["next_page_token"].is_null());
    for t in [
        token.as_str(),
        "AAAA",
        "AAAAAAAAAAAAAAAAAAAAA",
        "AAAAAAAAAAAAAAAAAAAAAAAA",
        "!!",
        &"A".repeat(5_000),
    ] {
        h.check(
            &srv.get(&format!("/v1/operations?page_token={t}")).await,
            400,
            t,
        );
    }
    assert_eq!(srv.op_ok(&op).await["annotation_count"], 6);
}

/// `real` (a token's JSON) with the value at `pointer` replaced by the JSON text `v`,
/// which may be a number serde_json cannot hold.
fn forge(real: &Value, pointer: &str, v: &str) -> String {
    let mut t = real.clone();
    *t.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} in {real}")) = json!("@@");
    t.to_string().replace("\"@@\"", v)
}

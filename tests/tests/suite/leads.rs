//! Leads (prd §7.6, A.6): the CSV import (counts, dedupe, local formats, re-import), the lead
//! list and edits, the do-not-call list, roles and tenancy.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value as Json};
use tests::app::{Resp, TestApp};
use tests::fixtures::Tenant;
use tests::wait::eventually;

pub const BOUNDARY: &str = "----lead-import-boundary-7d1a";

/// A multipart body with the form fields and a CSV `file`.
pub fn multipart(establishment_id: Option<&str>, csv: Option<&[u8]>) -> Vec<u8> {
    let mut b = Vec::new();
    if let Some(e) = establishment_id {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"establishment_id\"\r\n\r\n{e}\r\n")
                .as_bytes(),
        );
    }
    if let Some(csv) = csv {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"leads.csv\"\r\nContent-Type: text/csv\r\n\r\n")
                .as_bytes(),
        );
        b.extend_from_slice(csv);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

pub async fn import(app: &TestApp, token: &str, est: Option<&str>, csv: Option<&[u8]>) -> Resp {
    let res = app
        .client
        .post(app.url("/leads/import"))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(multipart(est, csv))
        .send()
        .await
        .expect("request");
    TestApp::read(res).await
}

/// Imports and waits for the job to finish; answers its final status.
pub async fn imported(app: &TestApp, token: &str, est: &str, csv: &[u8]) -> Json {
    let r = import(app, token, Some(est), Some(csv)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["status"], "accepted");
    let job = r.body["job_id"].as_str().unwrap().to_string();
    assert!(job.starts_with("job_"), "{job}");
    app.settle().await;
    let path = format!("/leads/imports/{job}");
    eventually("the import finishes", Duration::from_secs(30), async || {
        let s = app.get(&path, token).await.body;
        (s["status"] == "completed" || s["status"] == "failed").then_some(s)
    })
    .await
}

/// A CSV of `n` São Paulo mobiles in local format, with some bad and duplicate rows.
fn big_csv(n: usize) -> (String, usize, usize, usize) {
    let mut csv = String::from("\u{feff}Phone;Name;E-mail;Plan\n");
    let (mut good, mut dup, mut bad) = (0, 0, 0);
    for i in 0..n {
        match i % 10 {
            // A duplicate of the row before, in international form.
            9 => {
                csv.push_str(&format!(
                    "+55 11 9{:04}-{:04};Dup {i};;\n",
                    (i - 2) / 10000,
                    (i - 2) % 10000
                ));
                dup += 1;
            }
            // Not a number.
            8 => {
                csv.push_str(&format!("12-{i};Bad {i};;\n"));
                bad += 1;
            }
            _ => {
                csv.push_str(&format!(
                    "(11) 9{:04}-{:04};Lead {i};lead{i}@example.com;gold\n",
                    i / 10000,
                    i % 10000
                ));
                good += 1;
            }
        }
    }
    (csv, good, dup, bad)
}

#[tokio::test]
async fn a_csv_of_thousands_of_rows_imports_with_the_right_counts_and_a_reimport_updates_without_twins(
) {
    let app = TestApp::spawn().await;
    let Tenant { est, admin } = app.tenant("Helios").await;
    let (csv, good, dup, bad) = big_csv(3000);
    let s = imported(&app, &admin, &est, csv.as_bytes()).await;
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["rows_total"], 3000);
    assert_eq!(s["rows_imported"], good as i64);
    assert_eq!(s["rows_duplicate"], dup as i64);
    assert_eq!(s["rows_rejected"], bad as i64);
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 100, "the first 100 errors are kept");
    assert_eq!(errors[0]["row"], 9);
    assert_eq!(errors[0]["column"], "phone");

    // Local numbers became E.164 in the establishment's region (pt-BR → BR).
    let page = app
        .get(
            &format!("/leads?establishment_id={est}&q=Lead%200&limit=5"),
            &admin,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let lead = &page.body["items"][0];
    assert_eq!(lead["phone_e164"], "+5511900000000");
    assert_eq!(lead["status"], "new");
    assert_eq!(lead["fields"]["plan"], "gold");
    assert_eq!(lead["attempts"], 0);
    assert_eq!(lead["do_not_call"], false);

    // A re-import updates the fields of the same leads and creates no twin.
    let again = "phone,plan,first_name,last_name\n+5511900000000,platinum,Ana,Souza\n";
    let s = imported(&app, &admin, &est, again.as_bytes()).await;
    assert_eq!(s["rows_imported"], 1);
    let page = app
        .get(
            &format!("/leads?establishment_id={est}&q=%2B5511900000000"),
            &admin,
        )
        .await;
    let items = page.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", page.text);
    assert_eq!(items[0]["id"], lead["id"]);
    assert_eq!(items[0]["fields"]["plan"], "platinum");
    assert_eq!(items[0]["name"], "Ana Souza");

    // Paging walks every lead once.
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/leads?establishment_id={est}&limit=200&cursor={c}"),
            None => format!("/leads?establishment_id={est}&limit=200"),
        };
        let p = app.get(&path, &admin).await.body;
        for i in p["items"].as_array().unwrap() {
            assert!(seen.insert(i["id"].as_str().unwrap().to_string()));
        }
        match p["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), good);
}

#[tokio::test]
async fn a_bad_upload_is_a_clear_4xx_and_a_file_without_a_phone_column_fails_the_job() {
    let app = TestApp::builder()
        .config(|c| c.dialer.lead_import_max_bytes = 1024)
        .spawn()
        .await;
    let Tenant { est, admin } = app.tenant("Helios").await;
    let r = import(&app, &admin, None, Some(b"phone\n+5511912345678\n")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["error"]["details"]["field"], "establishment_id");
    let r = import(&app, &admin, Some(&est), None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let big = "phone\n".to_string() + &"+5511912345678\n".repeat(200);
    let r = import(&app, &admin, Some(&est), Some(big.as_bytes())).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    let r = app
        .client
        .post(app.url("/leads/import"))
        .bearer_auth(&admin)
        .json(&json!({"establishment_id": est}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let s = imported(&app, &admin, &est, b"name,email\nAna,a@b.co\n").await;
    assert_eq!(s["status"], "failed", "{s}");
    assert!(s["failure"].as_str().unwrap().contains("phone"), "{s}");
}

#[tokio::test]
async fn operators_import_and_edit_viewers_read_and_other_tenants_see_nothing() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin } = app.tenant("Helios").await;
    let viewer = app.seed_member(&est, "viewer@example.com", "viewer").await;
    let operator = app
        .seed_member(&est, "operator@example.com", "operator")
        .await;
    let other = app.create_establishment(&admin, "Other").await;
    let outsider = app
        .seed_member(&other, "outsider@example.com", "admin")
        .await;

    let r = import(&app, &viewer, Some(&est), Some(b"phone\n(11) 91234-5678\n")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = import(
        &app,
        &outsider,
        Some(&est),
        Some(b"phone\n(11) 91234-5678\n"),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let s = imported(
        &app,
        &operator,
        &est,
        b"phone,name\n(11) 91234-5678,Ana\n(11) 91234-0000,Bia\n",
    )
    .await;
    assert_eq!(s["rows_imported"], 2);
    let job = s["job_id"].as_str().unwrap();
    let r = app.get(&format!("/leads/imports/{job}"), &outsider).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let page = app
        .get(&format!("/leads?establishment_id={est}"), &viewer)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let ana = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "Ana")
        .unwrap()
        .clone();
    let id = ana["id"].as_str().unwrap();
    let r = app
        .get(&format!("/leads?establishment_id={est}"), &outsider)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = app
        .patch(
            &format!("/leads/{id}"),
            &viewer,
            json!({"status": "contacted"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .patch(
            &format!("/leads/{id}"),
            &outsider,
            json!({"status": "contacted"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .patch(
            &format!("/leads/{id}"),
            &operator,
            json!({"status": "sold"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = app
        .patch(
            &format!("/leads/{id}"),
            &operator,
            json!({"status": "contacted", "do_not_call": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "contacted");
    assert_eq!(r.body["do_not_call"], true);
    let page = app
        .get(
            &format!("/leads?establishment_id={est}&status=contacted"),
            &viewer,
        )
        .await;
    assert_eq!(page.body["items"].as_array().unwrap().len(), 1);

    // The establishment's list: a number on it shows as do-not-call on its lead.
    let r = app
        .post(
            &format!("/establishments/{est}/do-not-call"),
            &operator,
            json!({"numbers": ["+5511912340000", "+5511912340000"], "reason": "asked by phone"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["added"], 1);
    let page = app
        .get(&format!("/leads?establishment_id={est}&q=Bia"), &viewer)
        .await;
    assert_eq!(page.body["items"][0]["do_not_call"], true, "{}", page.text);
    for bad in [
        json!({"numbers": [], "reason": "x"}),
        json!({"numbers": ["123"], "reason": "x"}),
        json!({"numbers": ["+5511912340000"], "reason": ""}),
    ] {
        let r = app
            .post(
                &format!("/establishments/{est}/do-not-call"),
                &operator,
                bad,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    }
    let r = app
        .post(
            &format!("/establishments/{est}/do-not-call"),
            &viewer,
            json!({"numbers": ["+5511912340001"], "reason": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

//! ServiceAccount tokens and TokenReview: an issued token (handle or
//! TokenRequest subresource) reviews as authenticated with the right user,
//! uid, groups, pod extra and audiences; a wrong audience, an expired token,
//! a forged signature, or a deleted bound pod do not.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube_double::{ApiServer, Options};
use serde_json::json;
use std::time::Duration;

async fn review(
    api: &Api<TokenReview>,
    token: &str,
    audiences: &[&str],
) -> k8s_openapi::api::authentication::v1::TokenReviewStatus {
    let tr: TokenReview = serde_json::from_value(json!({"spec": {"token": token, "audiences": audiences}})).unwrap();
    api.create(&PostParams::default(), &tr).await.unwrap().status.unwrap()
}

#[tokio::test]
async fn token_review_checks_signature_expiry_audience_and_binding() {
    let server = ApiServer::start(Options::default()).unwrap();
    let sa = server.create(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "proxy", "namespace": "default"}})).unwrap();
    let pod = server
        .create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "default"},
                                   "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .unwrap();
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let client = server.client("weft-control-plane").await.unwrap();
    let reviews: Api<TokenReview> = Api::all(client.clone());

    let token = server.issue_token(
        "default",
        "proxy",
        &["weft.io/identity"],
        Duration::from_secs(3600),
        Some(("p1", &pod_uid)),
    );
    assert_eq!(token.split('.').count(), 3);
    let s = review(&reviews, &token, &["weft.io/identity"]).await;
    assert_eq!(s.authenticated, Some(true), "{s:?}");
    assert_eq!(s.audiences.as_deref(), Some(&["weft.io/identity".to_string()][..]));
    let user = s.user.unwrap();
    assert_eq!(user.username.as_deref(), Some("system:serviceaccount:default:proxy"));
    assert_eq!(user.uid.as_deref(), sa["metadata"]["uid"].as_str());
    assert_eq!(
        user.groups.unwrap(),
        vec!["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]
    );
    let extra = user.extra.unwrap();
    assert_eq!(extra["authentication.kubernetes.io/pod-name"], vec!["p1".to_string()]);
    assert_eq!(extra["authentication.kubernetes.io/pod-uid"], vec![pod_uid.clone()]);

    // Wrong audience (and the API server's own audience when none is asked for).
    let s = review(&reviews, &token, &["other"]).await;
    assert_ne!(s.authenticated, Some(true));
    assert!(s.error.is_some());
    let s = review(&reviews, &token, &[]).await;
    assert_ne!(s.authenticated, Some(true));
    let default_aud = server.issue_token("default", "proxy", &[], Duration::from_secs(600), None);
    let s = review(&reviews, &default_aud, &[]).await;
    assert_eq!(s.authenticated, Some(true));
    assert_eq!(s.audiences.unwrap(), vec!["https://kubernetes.default.svc".to_string()]);

    // Forged: signature or payload altered.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut sig = parts[2].clone().into_bytes();
    sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
    parts[2] = String::from_utf8(sig).unwrap();
    let s = review(&reviews, &parts.join("."), &["weft.io/identity"]).await;
    assert_ne!(s.authenticated, Some(true));
    assert!(review(&reviews, "not-a-jwt", &["weft.io/identity"]).await.authenticated != Some(true));

    // Expired.
    let short = server.issue_token("default", "proxy", &["weft.io/identity"], Duration::from_secs(1), None);
    assert_eq!(review(&reviews, &short, &["weft.io/identity"]).await.authenticated, Some(true));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let s = review(&reviews, &short, &["weft.io/identity"]).await;
    assert_ne!(s.authenticated, Some(true));
    assert!(s.error.unwrap().contains("expired"));

    // The bound pod is gone.
    server.delete("v1", "Pod", "default", "p1").unwrap();
    let s = review(&reviews, &token, &["weft.io/identity"]).await;
    assert_ne!(s.authenticated, Some(true));
}

#[tokio::test]
async fn token_request_subresource() {
    let server = ApiServer::start(Options::default()).unwrap();
    server
        .create(
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "gw", "namespace": "default"}}),
        )
        .unwrap();
    let pod = server
        .create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gw-1", "namespace": "default"},
                                   "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .unwrap();
    let client = server.client("kubelet").await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let req: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": ["weft.io/identity"], "expirationSeconds": 3600,
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "gw-1", "uid": pod["metadata"]["uid"]}}}))
        .unwrap();
    let issued: TokenRequest = sas.create_subresource("token", "gw", &PostParams::default(), &req).await.unwrap();
    let token = issued.status.unwrap().token;
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let s = review(&reviews, &token, &["weft.io/identity"]).await;
    assert_eq!(s.authenticated, Some(true));
    assert_eq!(s.user.unwrap().extra.unwrap()["authentication.kubernetes.io/pod-name"], vec!["gw-1".to_string()]);
    assert!(
        server
            .recorded()
            .iter()
            .any(|r| r.verb == "create" && r.resource == "serviceaccounts" && r.subresource == "token")
    );

    // The ServiceAccount must exist; the lifetime must be at least 10 minutes.
    let err = sas
        .create_subresource::<TokenRequest, TokenRequest>("token", "nope", &PostParams::default(), &req)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404), "{err:?}");
    let short: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": ["x"], "expirationSeconds": 60}})).unwrap();
    let err = sas
        .create_subresource::<TokenRequest, TokenRequest>("token", "gw", &PostParams::default(), &short)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 422), "{err:?}");
}

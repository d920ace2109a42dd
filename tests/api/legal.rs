//! `/legal/privacy` and `/legal/terms` (public).

use crate::common::{Backend, spawn_app};

async fn legal_texts_have_built_in_defaults(backend: Backend) {
    let app = spawn_app(backend).await;
    let privacy = app.get_public("/legal/privacy").await.expect(200);
    assert_eq!(privacy["title"], "Privacy Policy");
    assert!(privacy["body"].as_str().unwrap().starts_with("# Privacy Policy"), "{privacy}");
    let terms = app.get_public("/legal/terms").await.expect(200);
    assert_eq!(terms["title"], "Terms of Service");
    assert!(terms["body"].as_str().unwrap().starts_with("# Terms of Service"), "{terms}");
    assert_eq!(terms.as_object().unwrap().len(), 2, "only title and body: {terms}");
    // Public: a stale token does not get in the way.
    app.get("/legal/terms", "expired-or-garbage").await.expect(200);
    app.stop().await;
}

async fn operator_files_replace_the_defaults(backend: Backend) {
    let app = spawn_app(backend).await;
    std::fs::write(app.config.data_dir.join("privacy.md"), "# Our policy\n\nWe keep nothing.\n").unwrap();
    let privacy = app.get_public("/legal/privacy").await.expect(200);
    assert_eq!(privacy["title"], "Privacy Policy");
    assert_eq!(privacy["body"], "# Our policy\n\nWe keep nothing.\n");
    // Terms still default; then the operator adds theirs (read per request, no restart).
    assert!(
        app.get_public("/legal/terms").await.expect(200)["body"].as_str().unwrap().starts_with("# Terms")
    );
    std::fs::write(app.config.data_dir.join("terms.md"), "Be nice.").unwrap();
    assert_eq!(app.get_public("/legal/terms").await.expect(200)["body"], "Be nice.");
    app.stop().await;
}

crate::both_backends!(legal_texts_have_built_in_defaults, operator_files_replace_the_defaults);

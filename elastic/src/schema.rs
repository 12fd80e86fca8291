//! The index's schema on the cluster: the index template from `schema/es/` and the index
//! itself, applied by `annostore schema apply`.

use crate::body;
use crate::config::ElasticConfig;
use crate::index::{ElasticIndex, read, unavailable};
use crate::response::{self, Verdict};
use annostore_core::index::IndexError;
use elasticsearch::indices::{
    IndicesCreateParts, IndicesExistsParts, IndicesPutIndexTemplateParts, IndicesPutMappingParts,
    IndicesPutSettingsParts,
};

/// Puts the index template (always: a newer annostore may bring a newer one) and
/// creates the index when missing; on an index that exists, puts the dynamic settings
/// of [`body::index_settings`] (`index.gc_deletes`), then the template's mappings (new
/// fields are added; a changed field is refused by the cluster and reported).
/// Idempotent: `annostore schema apply` calls it.
pub async fn apply_schema(config: &ElasticConfig) -> Result<(), IndexError> {
    let es = ElasticIndex::connect(config)?;
    let template = body::template(config)
        .map_err(|e| IndexError::Rejected(format!("the shipped template: {e}")))?;
    let name = config.template_name();
    es.with_retries("put index template", || async {
        es.client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(&name))
            .body(template.clone())
            .send()
            .await
    })
    .await?;
    let index = [config.index.as_str()];
    let exists = index_exists(&es, &index).await?;
    if exists {
        // The settings first: they do not depend on the mappings, so an index whose
        // mappings are refused (schema version 1) still stops remembering deleted
        // documents' versions, which garbage collection needs (`body::GC_DELETES`).
        let settings = body::index_settings();
        es.with_retries("put index settings", || async {
            es.client
                .indices()
                .put_settings(IndicesPutSettingsParts::Index(&index))
                .body(settings.clone())
                .send()
                .await
        })
        .await?;
        let mappings = template["template"]["mappings"].clone();
        es.with_retries("put mapping", || async {
            es.client
                .indices()
                .put_mapping(IndicesPutMappingParts::Index(&index))
                .body(mappings.clone())
                .send()
                .await
        })
        .await?;
        return Ok(());
    }
    let created = read(
        es.client
            .indices()
            .create(IndicesCreateParts::Index(&config.index))
            .send()
            .await,
    )
    .await
    .map_err(unavailable)?;
    match response::verdict(created.status) {
        Verdict::Done => Ok(()),
        // Someone else created it between the check and now: fine.
        _ if String::from_utf8_lossy(&created.body)
            .contains("resource_already_exists_exception") =>
        {
            Ok(())
        }
        Verdict::Retry => Err(IndexError::Unavailable(format!(
            "create index: {}",
            response::describe_body(created.status, &created.body)
        ))),
        Verdict::Reject => Err(IndexError::Rejected(format!(
            "create index: {}",
            response::describe_body(created.status, &created.body)
        ))),
    }
}

/// HEAD <index>: 200 exists (index or alias), 404 does not.
async fn index_exists(es: &ElasticIndex, index: &[&str]) -> Result<bool, IndexError> {
    let mut attempt = 0u32;
    loop {
        let sent = es
            .client
            .indices()
            .exists(IndicesExistsParts::Index(index))
            .send()
            .await;
        let failure = match read(sent).await {
            Ok(a) if a.status == 200 => return Ok(true),
            Ok(a) if a.status == 404 => return Ok(false),
            Ok(a) if response::verdict(a.status) == Verdict::Reject => {
                return Err(IndexError::Rejected(format!(
                    "index exists: {}",
                    response::describe_body(a.status, &a.body)
                )));
            }
            Ok(a) => response::describe_body(a.status, &a.body),
            Err(e) => e,
        };
        attempt += 1;
        if attempt > es.config.max_retries {
            return Err(IndexError::Unavailable(format!("index exists: {failure}")));
        }
        tokio::time::sleep(es.backoff(attempt)).await;
    }
}

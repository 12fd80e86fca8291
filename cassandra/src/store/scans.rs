//! Scan helpers of the store: operations by key or day in either order, annotations
//! of an operation by bucket, pending work hour by hour, and completing work.

use super::*;

/// Index work rows (work_id, body), oldest first.
pub(super) fn decode_work(rows: &[scylla::value::Row]) -> StoreResult<Vec<IndexWork>> {
    let mut work = rows
        .iter()
        .map(|r| from_json::<IndexWork>("index work", text_at(r, 1)?))
        .collect::<StoreResult<Vec<_>>>()?;
    work.sort_unstable_by_key(|w| w.id);
    Ok(work)
}

impl CassandraStore {
    /// Operations matching `filter` in `order`, past `cursor`: one key's partition when
    /// the filter names a whole key, else day by day.
    pub(super) async fn list(
        &self,
        filter: &OperationFilter,
        order: ScanOrder,
        cursor: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Operation>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let below = |id: &Uuid| order.past(id, cursor);
        // Ids in the scan's order.
        let in_order = |ids: &mut Vec<Uuid>| match order {
            ScanOrder::NewestFirst => ids.sort_unstable_by(|a, b| b.cmp(a)),
            ScanOrder::OldestFirst => ids.sort_unstable(),
        };
        // One key: its own partition.
        if let (Some(t), Some(v), Some(p)) = (
            &filter.annotation_type,
            filter.annotation_type_version,
            &filter.pivot_id,
        ) {
            let key = OperationKey {
                annotation_type: t.clone(),
                annotation_type_version: v,
                pivot_id: p.clone(),
            };
            let rows = self
                .st()
                .key_ops_get
                .rows(self.s(), key_values(&key)?)
                .await?;
            let mut ids = rows
                .iter()
                .map(|r| uuid_at(r, 1))
                .collect::<StoreResult<Vec<_>>>()?;
            ids.retain(below);
            in_order(&mut ids);
            let mut out = self.load_ops(ids).await?;
            out.retain(|o| filter.matches(o));
            out.truncate(limit);
            return Ok(out);
        }
        // Otherwise day by day, in the scan's order.
        let rows = self.st().days_get.rows(self.s(), vec![int(0)]).await?;
        let mut days = rows
            .iter()
            .map(|r| i64_at(r, 0))
            .collect::<StoreResult<Vec<_>>>()?;
        match order {
            ScanOrder::NewestFirst => days.sort_unstable_by(|a, b| b.cmp(a)),
            ScanOrder::OldestFirst => days.sort_unstable(),
        }
        days.dedup();
        if let Some(c) = cursor {
            let day = uuid_ms(c).div_euclid(DAY_MS);
            days.retain(|d| match order {
                ScanOrder::NewestFirst => *d <= day,
                ScanOrder::OldestFirst => *d >= day,
            });
        }
        let mut out = Vec::new();
        for day in days {
            let rows = self.st().day_ops_get.rows(self.s(), vec![big(day)]).await?;
            let mut ids = rows
                .iter()
                .map(|r| uuid_at(r, 0))
                .collect::<StoreResult<Vec<_>>>()?;
            ids.retain(below);
            in_order(&mut ids);
            for chunk in ids.chunks(FAN_OUT * 4) {
                for op in self.load_ops(chunk.to_vec()).await? {
                    if filter.matches(&op) {
                        out.push(op);
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn complete_one(&self, w: IndexWork) -> StoreResult<()> {
        let st = self.st();
        let hour = uuid_ms(w.id).div_euclid(HOUR_MS);
        self.write_batch(vec![
            (
                &st.pending_op_delete.prepared,
                vec![uuid(w.operation_id), uuid(w.id)],
            ),
            (
                &st.pending_hour_delete.prepared,
                vec![big(hour), uuid(w.id)],
            ),
        ])
        .await
    }

    pub(super) async fn load_annotation(&self, id: Uuid) -> StoreResult<Option<Annotation>> {
        let rows = self.st().ann_get.rows(self.s(), vec![uuid(id)]).await?;
        match rows.first() {
            Some(r) => Ok(Some(from_json("annotation", text_at(r, 1)?)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` ids of one bucket above `after`, ascending. The range in the query
    /// only saves reading: the rows are filtered and sorted here again.
    pub(super) async fn bucket_ids(
        &self,
        op: Uuid,
        bucket: i32,
        after: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Uuid>> {
        // Reading stops at `limit` only where clustering order is real.
        let max = self.inner.honoured.then_some(limit);
        let rows = match after {
            Some(a) => {
                self.st()
                    .op_ann_after
                    .rows_up_to(
                        self.s(),
                        vec![uuid(op), int(bucket), blob(a.as_bytes())],
                        max,
                    )
                    .await?
            }
            None => {
                self.st()
                    .op_ann_first
                    .rows_up_to(self.s(), vec![uuid(op), int(bucket)], max)
                    .await?
            }
        };
        let mut ids = Vec::with_capacity(rows.len());
        for r in &rows {
            let b = blob_at(r, 0)?;
            let id = Uuid::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if after.is_none_or(|a| id > a) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.truncate(limit);
        Ok(ids)
    }

    /// Pending work of all operations, oldest first, hour by hour.
    pub(super) async fn oldest_work(&self, limit: usize) -> StoreResult<Vec<IndexWork>> {
        let rows = self.st().hours_get.rows(self.s(), vec![int(0)]).await?;
        let mut hours = rows
            .iter()
            .map(|r| i64_at(r, 0))
            .collect::<StoreResult<Vec<_>>>()?;
        hours.sort_unstable();
        hours.dedup();
        let this_hour = unix_ms(OffsetDateTime::now_utc()).div_euclid(HOUR_MS);
        let mut out = Vec::new();
        for hour in hours {
            let rows = self
                .st()
                .pending_hour_get
                .rows(self.s(), vec![big(hour)])
                .await?;
            if rows.is_empty() && hour < this_hour - 1 {
                // An empty hour over an hour old gets no more work (work ids are
                // minted at upsert time): forget it.
                self.st()
                    .hours_delete
                    .run(self.s(), vec![int(0), big(hour)])
                    .await?;
                continue;
            }
            for w in decode_work(&rows)? {
                out.push(w);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

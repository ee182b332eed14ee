//! Blobs in containerd's content store: written through the Content service's write
//! stream (containerd 1.6 has no Transfer service), read back, labelled for the garbage
//! collector.

use std::collections::HashMap;

use containerd_client::services::v1::{
    Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::containerd::Containerd;
use crate::error::{CriError, Result};

/// Bytes sent to containerd per write message.
const CHUNK: usize = 1 << 20;

/// The blob's info if containerd has it.
pub async fn info(ctd: &Containerd, digest: &str) -> Result<Option<Info>> {
    match ctd
        .content()
        .info(ctd.req(InfoRequest {
            digest: digest.to_string(),
        }))
        .await
    {
        Ok(r) => Ok(r.into_inner().info),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(CriError::containerd(format!("look up blob {digest}"), s)),
    }
}

/// Adds `labels` to an existing blob.
pub async fn add_labels(
    ctd: &Containerd,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    let info = Info {
        digest: digest.to_string(),
        labels,
        ..Default::default()
    };
    ctd.content()
        .update(ctd.req(UpdateRequest {
            info: Some(info),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .map_err(|s| CriError::containerd(format!("label blob {digest}"), s))?;
    Ok(())
}

/// Writes a blob of `size` bytes that must hash to `digest`, unless containerd has it
/// already; either way it ends up carrying `labels`. containerd verifies size and
/// digest at commit, so a corrupt download is never stored.
pub async fn write<S, E>(
    ctd: &Containerd,
    lease: &str,
    digest: &str,
    size: i64,
    labels: HashMap<String, String>,
    data: S,
) -> Result<()>
where
    S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let reference = format!("gantry-pull-{digest}");
    // Another pull (of another image sharing this layer) may hold the ingest: wait for
    // it, as containerd's own client does; its blob then usually exists.
    let mut delay = std::time::Duration::from_millis(50);
    let started = std::time::Instant::now();
    let (tx, mut responses, stat) = loop {
        if info(ctd, digest).await?.is_some() {
            return add_labels(ctd, digest, labels).await;
        }
        match open(ctd, lease, &reference, digest).await {
            Ok(opened) => break opened,
            Err(Locked) if started.elapsed() < LOCK_WAIT => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(1));
            }
            Err(Locked) => {
                return Err(CriError::Unavailable(format!(
                    "write blob {digest}: another writer held it for {} s",
                    LOCK_WAIT.as_secs()
                )))
            }
            Err(Failed(e)) => return Err(e),
        }
    };
    let mut writer = Writer {
        tx,
        responses: &mut responses,
        digest,
    };
    let mut offset = stat.offset;
    let mut skip = offset;
    let mut data = data;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    loop {
        let next = data.next().await;
        let done = next.is_none();
        if let Some(chunk) = next {
            let chunk =
                chunk.map_err(|e| CriError::Unavailable(format!("download blob {digest}: {e}")))?;
            let mut bytes: &[u8] = &chunk;
            if skip > 0 {
                let n = (skip as usize).min(bytes.len());
                bytes = &bytes[n..];
                skip -= n as i64;
            }
            buf.extend_from_slice(bytes);
        }
        if buf.len() >= CHUNK || (done && !buf.is_empty()) {
            let len = buf.len() as i64;
            writer
                .exchange(WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: reference.clone(),
                    offset,
                    data: std::mem::take(&mut buf),
                    ..Default::default()
                })
                .await?;
            offset += len;
        }
        if done {
            break;
        }
    }
    let committed = writer
        .exchange(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference.clone(),
            total: size,
            offset,
            expected: digest.to_string(),
            labels,
            ..Default::default()
        })
        .await;
    match committed {
        Ok(_) => Ok(()),
        // Another pull stored the same blob in the meantime.
        Err(CriError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// How long a pull waits for another pull's write of the same blob.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

enum OpenError {
    /// containerd: the ingest ref is locked by another writer.
    Locked,
    Failed(CriError),
}
use OpenError::{Failed, Locked};

type Opened = (
    mpsc::Sender<WriteContentRequest>,
    tonic::Streaming<containerd_client::services::v1::WriteContentResponse>,
    containerd_client::services::v1::WriteContentResponse,
);

/// Opens a write stream for `reference` and returns it with its Stat answer (a write
/// interrupted earlier, say by a restart mid-pull, resumes at its offset).
async fn open(
    ctd: &Containerd,
    lease: &str,
    reference: &str,
    digest: &str,
) -> std::result::Result<Opened, OpenError> {
    let locked =
        |s: &tonic::Status| s.code() == tonic::Code::Unavailable && s.message().contains("locked");
    let (tx, rx) = mpsc::channel::<WriteContentRequest>(2);
    // The Stat is queued before the call: containerd answers the call only once the
    // first message has arrived.
    let stat_req = WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: reference.to_string(),
        ..Default::default()
    };
    tx.send(stat_req).await.map_err(|_| {
        Failed(CriError::Internal(format!(
            "write blob {digest}: stream closed"
        )))
    })?;
    let mut responses = match ctd
        .content()
        .write(ctd.req_leased(ReceiverStream::new(rx), Some(lease)))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if locked(&s) => return Err(Locked),
        Err(s) => {
            return Err(Failed(CriError::containerd(
                format!("open a write of blob {digest}"),
                s,
            )))
        }
    };
    match responses.message().await {
        Ok(Some(stat)) => Ok((tx, responses, stat)),
        Ok(None) => Err(Failed(CriError::Internal(format!(
            "write blob {digest}: containerd ended the stream"
        )))),
        Err(s) if locked(&s) => Err(Locked),
        Err(s) => Err(Failed(CriError::containerd(
            format!("write blob {digest}"),
            s,
        ))),
    }
}

/// One request, one response: containerd answers every write message.
struct Writer<'a> {
    tx: mpsc::Sender<WriteContentRequest>,
    responses: &'a mut tonic::Streaming<containerd_client::services::v1::WriteContentResponse>,
    digest: &'a str,
}

impl Writer<'_> {
    async fn exchange(
        &mut self,
        req: WriteContentRequest,
    ) -> Result<containerd_client::services::v1::WriteContentResponse> {
        let digest = self.digest;
        self.tx
            .send(req)
            .await
            .map_err(|_| CriError::Internal(format!("write blob {digest}: stream closed")))?;
        self.receive().await
    }

    async fn receive(&mut self) -> Result<containerd_client::services::v1::WriteContentResponse> {
        let digest = self.digest;
        match self.responses.message().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(CriError::Internal(format!(
                "write blob {digest}: containerd ended the stream"
            ))),
            Err(s) => Err(CriError::containerd(format!("write blob {digest}"), s)),
        }
    }
}

/// Reads a whole (small) blob: manifests and image configs.
pub async fn read_all(ctd: &Containerd, digest: &str) -> Result<Vec<u8>> {
    let mut stream = ctd
        .content()
        .read(ctd.req(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(|s| CriError::containerd(format!("read blob {digest}"), s))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(part) = stream
        .message()
        .await
        .map_err(|s| CriError::containerd(format!("read blob {digest}"), s))?
    {
        out.extend_from_slice(&part.data);
    }
    Ok(out)
}

//! Image garbage collection, as upstream's pkg/kubelet/images/image_gc_manager.go:
//! at the start and every 5 minutes after, the images the runtime holds are recorded (first seen, last used by a
//! container, in any state); when the image filesystem is at least
//! imageGCHighThresholdPercent full, unused images are removed, least recently used
//! first, until it is below imageGCLowThresholdPercent. Images younger than
//! imageMinimumGCAge and images the runtime pins are kept; with imageMaximumGCAge set,
//! images unused for that long are removed whatever the disk says.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_cri::api;

use crate::events::Recorder;
use crate::eviction::thresholds::Signal;
use crate::eviction::NodeReclaimer;
use crate::node_stats;

/// How often upstream's kubelet runs image GC (ImageGCPeriod).
pub const PERIOD: Duration = Duration::from_secs(5 * 60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Usage (percent of the image filesystem) at which GC starts; 100 turns it off.
    pub high_threshold_percent: u8,
    /// Usage GC frees down to.
    pub low_threshold_percent: u8,
    /// Images seen for less than this are never removed.
    pub min_age: Duration,
    /// Images unused for longer than this are removed; zero turns it off.
    pub max_age: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(2 * 60),
            max_age: Duration::ZERO,
        }
    }
}

/// An image the runtime holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    /// Its tags and digest references (a container may name the image by either).
    pub refs: Vec<String>,
    pub size: u64,
    /// The runtime asks that it is never removed (its sandbox image).
    pub pinned: bool,
}

/// The image filesystem's size and free space, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSpace {
    pub capacity: u64,
    pub available: u64,
}

/// What image GC needs of the runtime.
pub trait ImageRuntime {
    /// Every image, with its size.
    async fn images(&self) -> Result<Vec<Image>, String>;
    /// How containers (running or exited) name their images: IDs or references.
    async fn container_image_refs(&self) -> Result<HashSet<String>, String>;
    /// The filesystem the images are stored on.
    async fn image_fs(&self) -> Result<FsSpace, String>;
    async fn remove(&self, id: &str) -> Result<(), String>;
}

#[derive(Clone, Copy, Debug)]
struct Record {
    /// None: already there when the agent started, so of unknown age (upstream's zero
    /// time), old enough for any minimum age.
    first_detected: Option<Instant>,
    last_used: Instant,
    size: u64,
    pinned: bool,
}

/// The images' records and the policy; one per node.
pub struct ImageGc {
    policy: Policy,
    records: HashMap<String, Record>,
    /// The images were detected at least once.
    initialized: bool,
}

/// What one collection did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub removed: Vec<String>,
    pub freed: u64,
}

impl ImageGc {
    pub fn new(policy: Policy) -> Self {
        ImageGc {
            policy,
            records: HashMap::new(),
            initialized: false,
        }
    }

    /// Records the images present at `now`: new ones as first detected, those in use as
    /// used now; forgets images that are gone. Returns the images in use.
    async fn detect(
        &mut self,
        rt: &impl ImageRuntime,
        now: Instant,
    ) -> Result<HashSet<String>, String> {
        let images = rt.images().await?;
        let refs = rt.container_image_refs().await?;
        let in_use: HashSet<String> = images
            .iter()
            .filter(|i| refs.contains(&i.id) || i.refs.iter().any(|r| refs.contains(r)))
            .map(|i| i.id.clone())
            .collect();
        let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        self.records.retain(|id, _| present.contains(id.as_str()));
        let first_detected = std::mem::replace(&mut self.initialized, true).then_some(now);
        for image in &images {
            let record = self.records.entry(image.id.clone()).or_insert(Record {
                first_detected,
                last_used: now,
                size: image.size,
                pinned: image.pinned,
            });
            record.size = image.size;
            record.pinned = image.pinned;
            if in_use.contains(&image.id) {
                record.last_used = now;
            }
        }
        Ok(in_use)
    }

    /// One round: detect, remove images past the maximum age, then free space if the
    /// filesystem is past the high threshold. An error names what could not be done
    /// (upstream's FreeDiskSpaceFailed message when too little was eligible).
    pub async fn collect(
        &mut self,
        rt: &impl ImageRuntime,
        now: Instant,
    ) -> (Collected, Result<(), String>) {
        let mut done = Collected::default();
        let in_use = match self.detect(rt, now).await {
            Ok(u) => u,
            Err(e) => return (done, Err(e)),
        };
        if !self.policy.max_age.is_zero() {
            let old: Vec<String> = self
                .candidates(&in_use, now)
                .into_iter()
                .filter(|id| now.duration_since(self.records[id].last_used) > self.policy.max_age)
                .collect();
            let mut failures = Vec::new();
            for id in old {
                if let Err(e) = self.remove(rt, &id, &mut done).await {
                    failures.push(e);
                }
            }
            if !failures.is_empty() {
                tracing::warn!(errors = %failures.join("; "), "image GC past the maximum age");
            }
        }
        if self.policy.high_threshold_percent >= 100 {
            return (done, Ok(()));
        }
        let fs = match rt.image_fs().await {
            Ok(fs) => fs,
            Err(e) => return (done, Err(e)),
        };
        if fs.capacity == 0 {
            return (
                done,
                Err("invalid capacity 0 on image filesystem".to_string()),
            );
        }
        let usage_percent = 100 - (fs.available.saturating_mul(100) / fs.capacity).min(100);
        if usage_percent < u64::from(self.policy.high_threshold_percent) {
            return (done, Ok(()));
        }
        let target = fs.capacity / 100 * (100 - u64::from(self.policy.low_threshold_percent));
        let to_free = target.saturating_sub(fs.available);
        tracing::info!(
            usage_percent,
            high = self.policy.high_threshold_percent,
            to_free,
            "image filesystem past the high threshold: removing unused images"
        );
        let result = self.free(rt, to_free, &in_use, now, &mut done).await;
        (done, result)
    }

    /// Removes every unused image old enough, whatever the disk says (upstream's
    /// DeleteUnusedImages, what eviction calls under DiskPressure).
    pub async fn delete_unused(&mut self, rt: &impl ImageRuntime, now: Instant) -> Collected {
        let mut done = Collected::default();
        if let Ok(in_use) = self.detect(rt, now).await {
            let _ = self.free(rt, u64::MAX, &in_use, now, &mut done).await;
        }
        done
    }

    /// Unused, unpinned images at least the minimum age, least recently used first
    /// (then first detected first).
    fn candidates(&self, in_use: &HashSet<String>, now: Instant) -> Vec<String> {
        let mut list: Vec<(&String, &Record)> = self
            .records
            .iter()
            .filter(|(id, r)| {
                !in_use.contains(*id)
                    && !r.pinned
                    && r.first_detected
                        .is_none_or(|t| now.duration_since(t) >= self.policy.min_age)
            })
            .collect();
        list.sort_by(|a, b| {
            (a.1.last_used, a.1.first_detected, a.0).cmp(&(b.1.last_used, b.1.first_detected, b.0))
        });
        list.into_iter().map(|(id, _)| id.clone()).collect()
    }

    async fn free(
        &mut self,
        rt: &impl ImageRuntime,
        bytes: u64,
        in_use: &HashSet<String>,
        now: Instant,
        done: &mut Collected,
    ) -> Result<(), String> {
        let start = done.freed;
        let mut failures = Vec::new();
        for id in self.candidates(in_use, now) {
            if done.freed - start >= bytes {
                break;
            }
            if let Err(e) = self.remove(rt, &id, done).await {
                failures.push(e);
            }
        }
        let freed = done.freed - start;
        if freed < bytes && bytes != u64::MAX {
            let mut message = format!(
                "Failed to garbage collect required amount of images. Attempted to free {bytes} bytes, but only found {freed} bytes eligible to free."
            );
            if !failures.is_empty() {
                message.push_str(&format!(" Errors: {}", failures.join("; ")));
            }
            return Err(message);
        }
        Ok(())
    }

    async fn remove(
        &mut self,
        rt: &impl ImageRuntime,
        id: &str,
        done: &mut Collected,
    ) -> Result<(), String> {
        let size = self.records.get(id).map_or(0, |r| r.size);
        rt.remove(id)
            .await
            .map_err(|e| format!("remove image {id}: {e}"))?;
        tracing::info!(image = id, size, "image garbage collected");
        self.records.remove(id);
        done.removed.push(id.to_string());
        done.freed += size;
        Ok(())
    }
}

/// Image GC over a CRI runtime.
pub struct CriImages(pub gantry_pod_manager::Cri);

impl ImageRuntime for CriImages {
    async fn images(&self) -> Result<Vec<Image>, String> {
        let list = self
            .0
            .images
            .clone()
            .list_images(api::ListImagesRequest::default())
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        Ok(list
            .images
            .into_iter()
            .map(|i| Image {
                refs: i.repo_tags.into_iter().chain(i.repo_digests).collect(),
                id: i.id,
                size: i.size,
                pinned: i.pinned,
            })
            .collect())
    }

    async fn container_image_refs(&self) -> Result<HashSet<String>, String> {
        let list = self
            .0
            .runtime
            .clone()
            .list_containers(api::ListContainersRequest::default())
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        // image_ref, and the image the container was created from.
        Ok(list
            .containers
            .into_iter()
            .flat_map(|c| [Some(c.image_ref), c.image.map(|i| i.image)])
            .flatten()
            .filter(|s| !s.is_empty())
            .collect())
    }

    async fn image_fs(&self) -> Result<FsSpace, String> {
        let info = self
            .0
            .images
            .clone()
            .image_fs_info(api::ImageFsInfoRequest::default())
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        let mount = info
            .image_filesystems
            .first()
            .and_then(|f| f.fs_id.as_ref())
            .map(|id| id.mountpoint.clone())
            .ok_or("the runtime reported no image filesystem")?;
        let usage = node_stats::fs_usage(Path::new(&mount)).map_err(|e| e.to_string())?;
        Ok(FsSpace {
            capacity: usage.capacity,
            available: usage.available,
        })
    }

    async fn remove(&self, id: &str) -> Result<(), String> {
        self.0
            .images
            .clone()
            .remove_image(api::RemoveImageRequest {
                image: Some(api::ImageSpec {
                    image: id.to_string(),
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string())
    }
}

/// The node's image GC: its records and the runtime, shared by the periodic rounds and
/// the eviction manager.
#[derive(Clone)]
pub struct SharedImageGc {
    gc: Arc<tokio::sync::Mutex<ImageGc>>,
    rt: Arc<CriImages>,
}

impl SharedImageGc {
    pub fn new(policy: Policy, cri: gantry_pod_manager::Cri) -> Self {
        SharedImageGc {
            gc: Arc::new(tokio::sync::Mutex::new(ImageGc::new(policy))),
            rt: Arc::new(CriImages(cri)),
        }
    }

    /// Runs image GC at once and then every PERIOD (upstream's wait.Until), posting a
    /// FreeDiskSpaceFailed warning on the node when it cannot free enough.
    pub async fn run(self, events: Option<Recorder>) {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (done, result) = self
                .gc
                .lock()
                .await
                .collect(&*self.rt, Instant::now())
                .await;
            if !done.removed.is_empty() {
                tracing::info!(removed = done.removed.len(), freed = done.freed, "image GC");
            }
            if let Err(message) = result {
                tracing::warn!(%message, "image GC");
                if let Some(events) = &events {
                    events.node_event("Warning", "FreeDiskSpaceFailed", &message);
                }
            }
        }
    }
}

impl NodeReclaimer for SharedImageGc {
    /// Under disk pressure, every unused image goes (upstream's DeleteUnusedImages, with
    /// the images on the node's filesystem); memory and PIDs are not reclaimed here.
    fn reclaim(&self, signal: Signal) -> Pin<Box<dyn Future<Output = u64> + Send + '_>> {
        Box::pin(async move {
            if matches!(signal, Signal::MemoryAvailable | Signal::PidAvailable) {
                return 0;
            }
            let done = self
                .gc
                .lock()
                .await
                .delete_unused(&*self.rt, Instant::now())
                .await;
            tracing::info!(
                removed = done.removed.len(),
                freed = done.freed,
                ?signal,
                "image GC under disk pressure"
            );
            done.freed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeRuntime {
        images: Mutex<Vec<Image>>,
        in_use: Mutex<HashSet<String>>,
        fs: Mutex<Option<FsSpace>>,
        removed: Mutex<Vec<String>>,
    }

    impl FakeRuntime {
        fn with(images: &[(&str, u64, bool)], capacity: u64, available: u64) -> Self {
            let rt = FakeRuntime::default();
            *rt.images.lock().unwrap() = images
                .iter()
                .map(|(id, size, pinned)| Image {
                    id: id.to_string(),
                    refs: vec![format!("registry.example/{id}:1")],
                    size: *size,
                    pinned: *pinned,
                })
                .collect();
            *rt.fs.lock().unwrap() = Some(FsSpace {
                capacity,
                available,
            });
            rt
        }

        fn use_images(&self, ids: &[&str]) {
            *self.in_use.lock().unwrap() = ids.iter().map(|s| s.to_string()).collect();
        }
    }

    impl ImageRuntime for FakeRuntime {
        async fn images(&self) -> Result<Vec<Image>, String> {
            Ok(self.images.lock().unwrap().clone())
        }
        async fn container_image_refs(&self) -> Result<HashSet<String>, String> {
            Ok(self.in_use.lock().unwrap().clone())
        }
        async fn image_fs(&self) -> Result<FsSpace, String> {
            self.fs.lock().unwrap().ok_or_else(|| "no fs".to_string())
        }
        async fn remove(&self, id: &str) -> Result<(), String> {
            let mut images = self.images.lock().unwrap();
            let i = images.iter().position(|i| i.id == id).ok_or("not found")?;
            let gone = images.remove(i);
            if let Some(fs) = self.fs.lock().unwrap().as_mut() {
                fs.available += gone.size;
            }
            self.removed.lock().unwrap().push(id.to_string());
            Ok(())
        }
    }

    const MIN: Duration = Duration::from_secs(120);

    fn policy() -> Policy {
        Policy::default()
    }

    #[tokio::test]
    async fn below_the_high_threshold_nothing_is_removed() {
        // 84 % used: under 85.
        let rt = FakeRuntime::with(&[("old", 10, false)], 100, 16);
        let mut gc = ImageGc::new(policy());
        let t0 = Instant::now();
        gc.detect(&rt, t0).await.unwrap();
        let (done, result) = gc.collect(&rt, t0 + MIN * 2).await;
        assert_eq!(result, Ok(()));
        assert!(done.removed.is_empty());
    }

    #[tokio::test]
    async fn past_the_high_threshold_least_recently_used_go_first_down_to_the_low() {
        // 1000 bytes, 90 % used: free to 80 % used, i.e. 100 bytes.
        let rt = FakeRuntime::with(
            &[
                ("used-long-ago", 60, false),
                ("used-lately", 60, false),
                ("running", 500, false),
                ("pause", 5, true),
            ],
            1000,
            100,
        );
        let mut gc = ImageGc::new(policy());
        let t0 = Instant::now();
        rt.use_images(&["used-long-ago", "used-lately", "running"]);
        gc.detect(&rt, t0).await.unwrap();
        rt.use_images(&["used-lately", "running"]);
        gc.detect(&rt, t0 + Duration::from_secs(60)).await.unwrap();
        rt.use_images(&["running"]);
        let (done, result) = gc.collect(&rt, t0 + MIN * 2).await;
        assert_eq!(result, Ok(()));
        assert_eq!(done.removed, vec!["used-long-ago", "used-lately"]);
        assert_eq!(done.freed, 120);
        let left: Vec<String> = rt
            .images
            .lock()
            .unwrap()
            .iter()
            .map(|i| i.id.clone())
            .collect();
        assert_eq!(left, vec!["running", "pause"]);
    }

    #[tokio::test]
    async fn young_in_use_and_pinned_images_are_kept_and_the_shortfall_is_reported() {
        let rt = FakeRuntime::with(&[("pause", 50, true)], 1000, 0);
        let mut gc = ImageGc::new(policy());
        let t0 = Instant::now();
        gc.detect(&rt, t0).await.unwrap();
        // Pulled after the agent started: its age counts from now.
        rt.images.lock().unwrap().push(Image {
            id: "young".into(),
            refs: Vec::new(),
            size: 50,
            pinned: false,
        });
        gc.detect(&rt, t0).await.unwrap();
        let (done, result) = gc.collect(&rt, t0 + Duration::from_secs(30)).await;
        assert!(done.removed.is_empty());
        assert_eq!(
            result,
            Err("Failed to garbage collect required amount of images. Attempted to free 200 bytes, but only found 0 bytes eligible to free.".to_string())
        );
        // Once old enough, the young one goes; the pinned one never does.
        let (done, _) = gc.collect(&rt, t0 + MIN).await;
        assert_eq!(done.removed, vec!["young"]);
    }

    #[tokio::test]
    async fn images_already_there_at_the_start_are_old_enough_at_once() {
        // As upstream: after a restart, images of unknown age can go in the first round
        // (else disk pressure right after a restart could only evict pods).
        let rt = FakeRuntime::with(&[("old", 300, false)], 1000, 0);
        let mut gc = ImageGc::new(policy());
        let (done, _) = gc.collect(&rt, Instant::now()).await;
        assert_eq!(done.removed, vec!["old"]);
    }

    #[tokio::test]
    async fn a_threshold_of_100_turns_disk_based_gc_off_but_not_the_maximum_age() {
        let rt = FakeRuntime::with(&[("stale", 10, false), ("fresh", 10, false)], 100, 0);
        let mut gc = ImageGc::new(Policy {
            high_threshold_percent: 100,
            max_age: Duration::from_secs(600),
            ..policy()
        });
        let t0 = Instant::now();
        rt.use_images(&["stale", "fresh"]);
        gc.detect(&rt, t0).await.unwrap();
        rt.use_images(&["fresh"]);
        let (done, result) = gc.collect(&rt, t0 + Duration::from_secs(300)).await;
        assert_eq!((done.removed.len(), result), (0, Ok(())));
        rt.use_images(&[]);
        let (done, result) = gc.collect(&rt, t0 + Duration::from_secs(601)).await;
        assert_eq!(result, Ok(()));
        assert_eq!(done.removed, vec!["stale"]);
    }

    #[tokio::test]
    async fn delete_unused_removes_every_eligible_image() {
        let rt = FakeRuntime::with(
            &[("a", 1, false), ("b", 2, false), ("c", 3, false)],
            1000,
            900,
        );
        // One container names its image by ID, another by reference.
        rt.use_images(&["b", "registry.example/c:1"]);
        let mut gc = ImageGc::new(policy());
        let t0 = Instant::now();
        gc.detect(&rt, t0).await.unwrap();
        let done = gc.delete_unused(&rt, t0 + MIN).await;
        assert_eq!(done.removed, vec!["a"]);
        assert_eq!(done.freed, 1);
    }
}

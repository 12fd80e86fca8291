// The shapes of what the server answers (openapi.yaml is the contract; only the fields
// the page reads are declared here).

export interface BBox {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface Annotation {
  id: string;
  media_id: string;
  start_ms: number;
  end_ms: number;
  label?: string | null;
  confidence?: number | null;
  bbox?: BBox | null;
  annotation_type: string;
  annotation_type_version: number;
  pivot_id?: string;
  operation_id: string;
}

export interface SearchPage {
  annotations: Annotation[];
  scores?: number[] | null;
  next_page_token?: string | null;
}

export interface Bucket {
  start_ms: number;
  count: number;
  labels?: Record<string, number>;
}

export interface Aggregates {
  total: number;
  labels?: { label: string; count: number }[];
  types?: { annotation_type: string; annotation_type_version: number; count: number }[];
  histogram?: Bucket[];
}

export type Status = "STARTED" | "FINISHED" | "CANCELLED" | "EXPIRED";

export interface Operation {
  id: string;
  annotation_type: string;
  annotation_type_version: number;
  pivot_id: string;
  operation_number: number;
  status: Status;
  active: boolean;
  annotation_count: number;
  producer?: string | null;
  created_at: string;
  updated_at: string;
  finished_at?: string | null;
  lease_expires_at?: string | null;
  metadata?: Record<string, unknown>;
}

export interface KeyRuns {
  annotation_type: string;
  annotation_type_version: number;
  pivot_id: string;
  runs: Operation[];
}

export interface MediaRuns {
  media_id: string;
  keys: KeyRuns[];
}

export interface MediaItem {
  media_id: string;
  last_run_at?: string | null;
  runs?: number;
}

export interface UiConfig {
  auth: "keys" | "open";
  media_url_template: string | null;
  media_files: boolean;
  poll_seconds: number;
  version: string;
}

/** The filters the page applies to boxes, the timeline and search. */
export interface Filters {
  /** `type` or `type@version`; "" for every type. */
  type: string;
  label: string;
  minConfidence: number;
}

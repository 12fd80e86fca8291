// The API key: asked for in a dialog when the server answers 401, kept for the tab's
// life in sessionStorage, and copied into the cookie `annostore_key` (path /v1/media/)
// because a <video> element cannot send an Authorization header for the media file.

const STORAGE = "annostore.key";

let pending: Promise<void> | null = null;

export function currentKey(): string | null {
  return sessionStorage.getItem(STORAGE);
}

function remember(key: string | null): void {
  const secure = location.protocol === "https:" ? "; Secure" : "";
  if (key) {
    sessionStorage.setItem(STORAGE, key);
    document.cookie = `annostore_key=${encodeURIComponent(key)}; path=/v1/media/; SameSite=Strict${secure}`;
  } else {
    sessionStorage.removeItem(STORAGE);
    document.cookie = `annostore_key=; path=/v1/media/; max-age=0; SameSite=Strict${secure}`;
  }
}

/** Re-sets the cookie from the stored key (a reload keeps sessionStorage, not always the cookie). */
export function restoreKey(): void {
  const key = currentKey();
  if (key) remember(key);
}

/**
 * Opens the key dialog (once, however many requests were refused) and resolves when a
 * key that the server accepts has been given.
 */
export function askForKey(why: string): Promise<void> {
  if (!pending) {
    pending = new Promise<void>((resolve) => {
      const dialog = document.getElementById("key-dialog") as HTMLDialogElement;
      const input = document.getElementById("key-input") as HTMLInputElement;
      const form = document.getElementById("key-form") as HTMLFormElement;
      const error = document.getElementById("key-error") as HTMLElement;
      const reason = document.getElementById("key-reason") as HTMLElement;
      reason.textContent = why;
      error.textContent = "";
      input.value = "";
      const submit = async (e: Event) => {
        e.preventDefault();
        const key = input.value.trim();
        if (!key) {
          error.textContent = "Paste a key (ask an admin for one: annostore keys create).";
          return;
        }
        // Any valid key may list the types: that tells a good key from a bad one.
        const res = await fetch("/v1/types", { headers: { authorization: `Bearer ${key}` } });
        if (res.status === 401) {
          error.textContent = "The server does not know this key.";
          return;
        }
        remember(key);
        form.removeEventListener("submit", submit);
        dialog.close();
        pending = null;
        resolve();
      };
      form.addEventListener("submit", submit);
      if (!dialog.open) dialog.showModal();
      input.focus();
    });
  }
  return pending;
}

// The dialog stays until a key is given: Escape would leave the page half loaded.
document.getElementById("key-dialog")?.addEventListener("cancel", (e) => e.preventDefault());

/** Forgets the key (the "key" button in the header): the next request asks again. */
export function forgetKey(): void {
  remember(null);
}

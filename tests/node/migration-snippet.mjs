// The migration guide's Node.js snippet ("Change two lines"), run unchanged against a Ringside
// gateway by tests/node/test_migration_snippet.py. Only the two lines the guide changes point at
// the gateway under test; everything between the markers is the guide's code, verbatim.
import OpenAI from "openai";

// After
const openai = new OpenAI({
  apiKey: process.env.RINGSIDE_API_KEY,
  baseURL: process.env.RINGSIDE_BASE_URL,
});

// --- the guide, verbatim ---
// Everything else stays the same
const assistant = await openai.beta.assistants.create({ name: "Support Bot", model: "fc:openai/gpt-4o" });
const thread = await openai.beta.threads.create();
await openai.beta.threads.messages.create(thread.id, { role: "user", content: "Hello" });
const run = await openai.beta.threads.runs.createAndPoll(thread.id, { assistant_id: assistant.id });
// --- end of the guide ---

// What the test checks: the objects the SDK parsed, and the thread the run answered in.
const messages = await openai.beta.threads.messages.list(thread.id, { order: "asc" });
console.log(JSON.stringify({ assistant, thread, run, messages: messages.data }));

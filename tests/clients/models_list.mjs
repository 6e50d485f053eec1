// models.list: every model id the gateway lists, paging with the SDK's auto-pagination.
import { client, main } from './sdk_common.mjs';

await main(async () => {
  const ids = [];
  for await (const info of client().models.list()) ids.push({ id: info.id, type: info.type });
  return { models: ids };
});

import { describe, expect, it } from 'vitest';
import { eventsCsv, lineCsv, statCsv, topCsv, widgetFileName } from '../src/lib/widgetcsv';

describe('widget CSV', () => {
  it('writes the line per bucket in UTC and the zone, with the previous period', () => {
    const t = Date.parse('2026-12-05T18:30:00Z') / 1000;
    const csv = lineCsv({ xs: [t, t + 3600], events: [5, 7], users: [2, 3] }, 'Asia/Kolkata', { events: [1, 2], users: [1, 1] });
    expect(csv.split('\r\n')).toEqual([
      'bucket_start,bucket_start (Asia/Kolkata),events,unique_users,events_previous_period,unique_users_previous_period',
      '2026-12-05T18:30:00.000Z,2026-12-06 00:00,5,2,1,1',
      '2026-12-05T19:30:00.000Z,2026-12-06 01:00,7,3,2,1',
      '',
    ]);
  });

  it('quotes what needs quoting (RFC 4180) and writes properties as JSON', () => {
    expect(topCsv({ org_id: 'o', date: '2026-12-05', events: [{ event_name: 'a,"b"', count: 3 }] })).toBe('date,event_name,count\r\n2026-12-05,"a,""b""",3\r\n');
    expect(statCsv('Events today (UTC)', null, null)).toBe('metric,value,note\r\nEvents today (UTC),,\r\n');
    const csv = eventsCsv([
      {
        id: 'e1',
        org_id: 'o',
        event_type: 'track',
        event_name: 'signup',
        user_id: null,
        session_id: 's',
        properties: { plan: 'pro', note: 'two\nlines' },
        timestamp: '2026-12-05T10:00:00Z',
        topic: 't',
        partition: 0,
        offset: 9,
        ingested_at: '2026-12-05T10:00:01Z',
      },
    ]);
    expect(csv).toBe(
      'timestamp,event_name,event_type,user_id,session_id,id,topic,partition,offset,properties\r\n' +
        '2026-12-05T10:00:00Z,signup,track,,s,e1,t,0,9,"{""plan"":""pro"",""note"":""two\\nlines""}"\r\n',
    );
    expect(widgetFileName('Events today (Asia/Kolkata)', Date.parse('2026-12-05T10:00:00Z'))).toBe('events-today-asia-kolkata-2026-12-05.csv');
    expect(widgetFileName('✓✓', 0)).toBe('widget-1970-01-01.csv');
  });
});
